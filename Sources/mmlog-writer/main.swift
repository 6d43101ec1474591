// mmlog-writer: appends records to an MMLog from one process (used by the multi-process
// tests, and handy by hand). `mmlog-writer --help` lists the options.
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import BenchRecords
import Logging
import MMLog
import MMLogArguments
import MMLogLogging
import ToolSupport

struct Writer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmlog-writer",
        abstract: "Append records to an MMLog from one process.",
        discussion: """
            Thread t of the process writes as worker `worker + t`, records 0..<ops: appendbench's \
            binary records (BenchRecords.RecordFormat), or with --text the lines of \
            BenchRecords.TextLines, or with --swift-log lines through MMLogHandler. Exits 0 when \
            every append succeeded, 1 with the error on stderr otherwise, 64 on bad arguments.
            """)

    @Option(help: "The log's data file.") var path: String
    @Option(help: "The worker number of the first thread.") var worker = 0
    @Option(help: "Records per thread.") var ops = 1000
    @Option(help: "Bytes per record.") var size = 128
    @Option(help: "Threads appending at once.") var threads = 1
    @OptionGroup var mmlog: MMLogFlags
    @Option(help: "Start at this CLOCK_REALTIME time in nanoseconds (0: now).") var startAt: UInt64 = 0
    @Flag(inversion: .prefixedNo, help: "Close the log at the end (--no-close leaves as a crash would).") var close = true
    @Flag(help: "Log lines through swift-log and MMLogHandler instead of writing records.") var swiftLog = false
    @Flag(help: "Write text lines (BenchRecords.TextLines) instead of binary records.") var text = false
    @Option(help: "Records per second per thread (0: as fast as possible).") var rate = 0
    @Option(help: "Call sync() after every this many records (0: never).") var syncEvery = 0
    @Option(help: "After this many records, reserve one more and exit without writing it, as a writer killed mid-append.")
    var abandonAfter: Int?
    @Flag(help: "With --abandon-after: die right after the fetch-add, before the range is published in the writer's slot.")
    var abandonUnpublished = false
    @Flag(help: "Go on after a failed append (as MMLogHandler does: drop the record); print 'appended N failed F' at the end.")
    var keepGoing = false
    @Option(help: "With --keep-going: after this many failures, print 'paused' and wait until --resume-file exists.")
    var pauseAfterFailures: Int?
    @Option(help: "The file whose appearance ends a pause.") var resumeFile: String?
    @Flag(help: "Print 'synced <n>' on stdout each time a sync() covering records 0..<n returns.") var reportSyncs = false
    @Flag(help: "Run one more thread that calls trim() in a loop while the others append.") var trimThread = false
    @Option(help: "MMLog.Options.rotateAtBytes: rotate the log when it passes this size.") var rotateAtBytes: Int?
    @Option(help: "MMLog.Options.keepRotated: rotated files to keep.") var keepRotated: Int?
    @Option(help: "Call rotate() after every this many records.") var rotateEvery: Int?
    @Option(help: "When this process rotates, print 'rotating' and pause this many ms between retiring the log and renaming its files.")
    var rotatePauseMs: Int?
    @Flag(help: "Check every sync(): when it returns, a flush that began after the call has ended, or the durable watermark is past the record; exit 5 on a violation.")
    var checkSyncs = false
    @Option(help: "When this process flushes for a group commit, print 'flushing' and pause this many ms inside the flush.")
    var flushPauseMs: Int?
    @Flag(help: "Fork after the records: the child must find the inherited handle refused and close it; the parent then waits for --resume-file, appends as many again and closes.")
    var forkTest = false
    @Flag(help: "Right after opening the log, fork a child that never touches it and sleeps until killed (a prefork worker, a helper before exec); print 'sleeper <pid>'.")
    var forkSleeper = false
    @Option(help: "A file of threads x ops bytes, mapped shared: byte t*ops+i becomes 1 when thread t starts appending record i, 2 when the append returned, 3 when it failed; what a process killed at any moment had appended (the torture test reads it). Put it on another filesystem than the log's.")
    var ackFile: String?

    func validate() throws {
        if size < 1 { throw ValidationError("--size must be at least 1") }
        if text && size < TextLines.minimumSize { throw ValidationError("--text needs --size of at least \(TextLines.minimumSize)") }
        if threads < 1 || ops < 0 || rate < 0 || syncEvery < 0 { throw ValidationError("counts must not be negative") }
    }

    func run() throws {
        if let rotatePauseMs {
            MMLog.testRotateHook = {
                printOut("rotating")
                sleepNanoseconds(UInt64(rotatePauseMs) * 1_000_000)
            }
        }
        if let flushPauseMs {
            MMLog.testFlushHook = {
                printOut("flushing")
                sleepNanoseconds(UInt64(flushPauseMs) * 1_000_000)
            }
        }
        while startAt > 0 && realtimeNanoseconds() < startAt {}
        let log: MMLog
        do {
            var options = mmlog.options
            options.rotateAtBytes = rotateAtBytes
            options.keepRotated = keepRotated
            log = try MMLog(path: path, options: options)
        } catch {
            printError("mmlog-writer: \(error)")
            throw ExitCode.failure
        }
        if forkSleeper {
            let child = fork()
            if child == 0 {
                while true { pause() }
            }
            printOut("sleeper \(child)")
        }
        let failures = Failures()
        let acks = try ackFile.map { try AckFile(path: $0, count: threads * ops) }
        if swiftLog {
            LoggingSystem.bootstrap { label in MMLogHandler(label: label, log: log) }
            try threadsStarted(onThreads(threads) { t in logLines(worker: worker + t, ops: ops) })
        } else {
            let done = Done()
            try threadsStarted(onThreads(threads + (trimThread ? 1 : 0)) { t in
                if t == threads {
                    while !done.value { _ = try? log.trim() }
                    return
                }
                if let failure = write(log, worker: worker + t, acks: acks.map { $0.base + t * ops }) { failures.add(failure) }
                done.count()
                if done.counted == threads { done.value = true }
            })
        }
        if abandonAfter != nil {
            _ = try? log.reserveAndAbandonForTesting(size, publish: !abandonUnpublished)
            _exit(0)
        }
        if forkTest { try forkThenAppend(log, failures) }
        if !close { Glibc.exit(failures.messages.isEmpty ? 0 : 1) }  // leave without closing, as a crash would
        do { try log.close() } catch { failures.add("close: \(error)") }
        for message in failures.messages { printError("mmlog-writer: \(message)") }
        if !failures.messages.isEmpty { throw ExitCode.failure }
    }

    /// Fails the run when `onThreads` could not start every thread (pthread_create's error).
    func threadsStarted(_ error: Int32) throws {
        guard error != 0 else { return }
        printError("mmlog-writer: pthread_create: \(String(cString: strerror(error)))")
        throw ExitCode.failure
    }

    /// Writes records `first..<first + ops` (or up to abandonAfter) of `worker`; returns the
    /// first failure (with --keep-going: a summary of failures, or nil when there were none).
    func write(_ log: MMLog, worker: Int, first: Int = 0, acks: UnsafeMutablePointer<UInt8>? = nil) -> String? {
        let record = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { record.deallocate() }
        let count = abandonAfter.map { min($0, ops) } ?? ops
        let started = monotonicNanoseconds()
        var appended = 0, failed = 0, firstFailure: String?
        defer {
            if keepGoing { printOut("appended \(appended) failed \(failed)") }
        }
        for i in first..<(first + count) {
            if rate > 0 {
                let due = started + UInt64(i) * 1_000_000_000 / UInt64(rate)
                let now = monotonicNanoseconds()
                if due > now { sleepNanoseconds(due - now) }
            }
            if text {
                TextLines.encode(worker: worker, index: i, into: record)
            } else {
                RecordFormat.encode(worker: worker, index: i, into: record)
            }
            let ack = i < ops ? acks.map { $0 + i } : nil
            ack?.pointee = AckFile.appending
            do {
                let offset = try log.append(UnsafeRawBufferPointer(record))
                ack?.pointee = AckFile.appended
                appended += 1
                if let rotateEvery, (i + 1) % rotateEvery == 0 { try log.rotate() }
                if syncEvery > 0 && (i + 1) % syncEvery == 0 {
                    let before = checkSyncs ? log.flushSequenceForTesting : (started: 0, done: 0)
                    try log.sync()
                    if checkSyncs {
                        let after = log.flushSequenceForTesting
                        let flushedAfterCall = Int32(bitPattern: after.done &- UInt32(truncatingIfNeeded: before.started &+ 1)) >= 0
                        if !flushedAfterCall && log.durableOffset < offset + size {
                            printError("mmlog-writer: sync() returned before record \(i) at \(offset) was flushed: flushes \(before) -> \(after), durable \(log.durableOffset)")
                            _exit(5)
                        }
                    }
                    if reportSyncs { printOut("synced \(i + 1)") }
                }
            } catch {
                ack?.pointee = AckFile.failed
                let message = "worker \(worker) record \(i): \(error)"
                guard keepGoing else { return message }
                failed += 1
                firstFailure = firstFailure ?? message
                if failed == pauseAfterFailures, let resumeFile {
                    printOut("paused")
                    while access(resumeFile, F_OK) != 0 { sleepNanoseconds(10_000_000) }
                }
            }
        }
        return nil
    }

    /// --fork-test: the child refuses the inherited handle and lets it go; the parent's locks
    /// and mappings must not notice.
    func forkThenAppend(_ log: MMLog, _ failures: Failures) throws {
        let child = fork()
        if child == 0 {
            var code: Int32 = 0
            do {
                try log.append("from the child\n")
                printError("mmlog-writer: the child appended through an inherited handle")
                code = 3
            } catch {
                if "\(error)".contains("fork") == false {
                    printError("mmlog-writer: the child's append failed, but not as forked: \(error)")
                    code = 4
                }
            }
            try? log.close()  // must leave the parent's locks alone
            _exit(code)
        }
        var status: Int32 = 0
        waitpid(child, &status, 0)
        if status != 0 { failures.add("the forked child exited with status \(status)") }
        printOut("forked")
        if let resumeFile { while access(resumeFile, F_OK) != 0 { sleepNanoseconds(10_000_000) } }
        if let failure = write(log, worker: worker, first: ops) { failures.add(failure) }
    }
}

/// Logs lines 0..<ops of `worker` through swift-log and MMLogHandler.
func logLines(worker: Int, ops: Int) {
    let logger = Logger(label: "worker.\(worker)")
    for i in 0..<ops {
        logger.info("record \(i)", metadata: ["worker": "\(worker)", "i": "\(i)"])
    }
}

/// --ack-file: one byte per record, in a shared mapping, so what a thread had appended
/// survives its process being killed. The stores are plain: the file is read after the
/// process has exited.
struct AckFile {
    static let appending: UInt8 = 1, appended: UInt8 = 2, failed: UInt8 = 3
    let base: UnsafeMutablePointer<UInt8>

    init(path: String, count: Int) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        let size = max(count, 1)
        // Blocks allocated now, so a store into the mapping can never meet a full disk (SIGBUS).
        guard fd >= 0, ftruncate(fd, off_t(size)) == 0, posix_fallocate(fd, 0, off_t(size)) == 0,
              let memory = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), memory != MAP_FAILED
        else {
            printError("mmlog-writer: --ack-file \(path): \(String(cString: strerror(errno)))")
            throw ExitCode.failure
        }
        close(fd)
        base = memory.assumingMemoryBound(to: UInt8.self)
    }
}

/// Tells the trimming thread when the appending threads have finished.
final class Done: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var _value = false, _counted = 0
    init() { pthread_mutex_init(&lock, nil) }
    var value: Bool {
        get { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return _value }
        set { pthread_mutex_lock(&lock); _value = newValue; pthread_mutex_unlock(&lock) }
    }
    var counted: Int { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return _counted }
    func count() { pthread_mutex_lock(&lock); _counted += 1; pthread_mutex_unlock(&lock) }
}

final class Failures: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private(set) var messages: [String] = []
    init() { pthread_mutex_init(&lock, nil) }
    func add(_ message: String) {
        pthread_mutex_lock(&lock)
        messages.append(message)
        pthread_mutex_unlock(&lock)
    }
}

Writer.main()
