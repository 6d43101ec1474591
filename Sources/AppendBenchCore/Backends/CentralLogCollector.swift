#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CBackends
import ToolSupport

/// The article's central logging authority (CLA): one process per run that every worker sends
/// its records to over a Unix socket, and that appends each record with one `write()` to an
/// `O_APPEND` file. Acknowledged (`cla`), it answers every record once it is appended (and,
/// with `--fsync-every N`, after the `fdatasync` every N records it appends); fire and forget
/// (`cla-async`), it answers nothing. The run service of both backends.
///
/// Sockets are SOCK_SEQPACKET, so each record arrives as one message, and each connection
/// delivers in order: one worker's records land in the order it sent them. The collector
/// appends one connection's messages in turn, a few at a time (`messagesPerTurn`), so one busy
/// worker cannot starve the others.
///
/// The collector ends when every worker has connected and closed its connection: it has then
/// appended every record it received. It closes the file, notes the time (Total Time ends no
/// earlier, so a queue still in flight never counts as done) and exits. A collector that dies
/// or fails makes the run fail with its reason; its workers then fail too (their socket closes).
final class CentralLogCollector: RunService {
    // One page of MAP_SHARED anonymous memory, written by the collector. The parent reads the
    // appended count while the collector runs (relaxed: a progress figure) and everything else
    // after reaping it (its exit orders its stores before the parent's wait returns).
    private static let pageSize = 4096
    private static let stateOffset = 0         // 0 running, 1 done, 2 failed
    private static let appendedOffset = 8      // records appended so far
    private static let finishedOffset = 16     // CLOCK_MONOTONIC after closing the file
    private static let setupCPUOffset = 24     // CPUTime (two words) when every worker had connected
    private static let setupDoneOffset = 40    // 1 once that is stored
    private static let lengthOffset = 48       // length of the failure message
    private static let messageOffset = 64
    private static let messageCapacity = pageSize - messageOffset

    /// Messages of one connection appended before the collector turns to the next.
    static let messagesPerTurn = 64
    /// How long the collector may go without appending a record, after the last worker exited,
    /// before the harness gives up on it.
    static let stallLimitNanoseconds: UInt64 = 30_000_000_000

    private static let runs = ManagedAtomic<Int>(0)

    let pid: pid_t
    private let key: String
    private let shared: UnsafeMutableRawPointer
    private let expectedRecords: Int
    var processes: [pid_t] { [pid] }

    /// Opens the output, binds the socket and forks the collector; puts the socket's name in
    /// `config.serviceAddress` for the workers.
    init(key: String, acknowledged: Bool, config: inout BackendConfig, workers: Int) throws {
        self.key = key
        expectedRecords = config.recordSize > 0 ? config.totalBytes / config.recordSize : 0
        guard let page = mmap(nil, Self.pageSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0),
              page != MAP_FAILED
        else { throw HarnessError.system("mmap(\(Self.pageSize) shared bytes for the collector)") }
        shared = page
        let file: Int32
        let listener: Int32
        let address = AbstractSocketAddress(
            name: "appendbench-\(getpid())-\(Self.runs.loadThenWrappingIncrement(ordering: .relaxed))-\(key)")
        do {
            file = try openForAppend(config.path)
            do {
                listener = try listenSeqpacket(address, backlog: workers)
            } catch {
                Glibc.close(file)
                throw error
            }
        } catch {
            munmap(page, Self.pageSize)
            throw error
        }
        let parent = getpid()
        let child = fork()
        if child == 0 {
            Self.serve(file: file, listener: listener, path: config.path, workers: workers, recordSize: config.recordSize,
                       acknowledged: acknowledged, fsyncEvery: config.fsyncEvery, shared: page, parent: parent)
        }
        let forkError = errno
        // Only the collector keeps the file and the listener: if it dies, connecting fails.
        Glibc.close(file)
        Glibc.close(listener)
        if child < 0 {
            munmap(page, Self.pageSize)
            throw HarnessError("fork of the collector", errno: forkError)
        }
        pid = child
        config.serviceAddress = address.name
    }

    // MARK: The collector process

    /// The collector's body, in the child. Never returns.
    private static func serve(file: Int32, listener: Int32, path: String, workers: Int, recordSize: Int,
                              acknowledged: Bool, fsyncEvery: Int, shared: UnsafeMutableRawPointer, parent: pid_t) -> Never {
        setProcessName("cla-collector")
        _ = cb_die_with_parent(parent)  // never outlive a harness that was killed
        // A connection per worker: --procs 1024 needs more than a default soft limit of 1024 files.
        var files = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &files) == 0 && files.rlim_cur < rlim_t(workers + 64) {
            files.rlim_cur = min(files.rlim_max, rlim_t(workers + 64))
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &files)
        }
        func fail(_ message: String) -> Never {
            let bytes = Array(message.utf8.prefix(messageCapacity))
            bytes.withUnsafeBytes { (shared + messageOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            shared.storeBytes(of: UInt64(bytes.count), toByteOffset: lengthOffset, as: UInt64.self)
            shared.storeBytes(of: 2, toByteOffset: stateOffset, as: UInt64.self)
            _exit(1)
        }
        let counter = UnsafeAtomic<UInt64>(at: (shared + appendedOffset).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: recordSize, alignment: 64)
        var acknowledgement: UInt8 = 1
        // polls[0] is the listener until every worker has connected, then -1 (poll skips it);
        // a closed connection's entry also becomes -1.
        var polls = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
        var accepted = 0, closed = 0
        var appended: UInt64 = 0
        let turn = acknowledged ? 1 : messagesPerTurn  // acknowledged: a worker has one record in flight
        do {
            while closed < workers {
                let ready = retryingInterrupts { Int(poll(&polls, nfds_t(polls.count), -1)) }
                if ready < 0 { throw HarnessError.system("poll(\(polls.count) sockets)") }
                if polls[0].fd >= 0 && polls[0].revents != 0 {
                    while accepted < workers, let connection = try acceptConnection(listener, "the collector's socket") {
                        polls.append(pollfd(fd: connection, events: Int16(POLLIN), revents: 0))
                        accepted += 1
                    }
                    if accepted == workers {
                        // Setup ends here: CPU time from now on is the run's.
                        CPUTime.ofThisProcess().store(to: shared + setupCPUOffset)
                        shared.storeBytes(of: 1, toByteOffset: setupDoneOffset, as: UInt64.self)
                        Glibc.close(listener)
                        polls[0].fd = -1
                    }
                }
                for k in 1..<polls.count where polls[k].fd >= 0 && polls[k].revents != 0 {
                    let connection = polls[k].fd
                    messages: for _ in 0..<turn {
                        switch try receiveMessage(connection, into: buffer, wait: false, "a worker's connection") {
                        case .empty:
                            break messages
                        case .closed:
                            Glibc.close(connection)
                            polls[k].fd = -1
                            closed += 1
                            break messages
                        case .message(let length):
                            guard length <= recordSize else {
                                throw HarnessError("received a message of \(length) bytes; records are \(recordSize)")
                            }
                            try appendOnce(file, UnsafeRawBufferPointer(rebasing: buffer[0..<length]), path)
                            appended += 1
                            counter.store(appended, ordering: .relaxed)
                            if fsyncEvery > 0 && appended % UInt64(fsyncEvery) == 0 { try syncData(file, path) }
                            if acknowledged {
                                do {
                                    try withUnsafeBytes(of: &acknowledgement) { try sendMessage(connection, $0, "a worker's connection") }
                                } catch let error as HarnessError where error.errno == EPIPE || error.errno == ECONNRESET {
                                    // The worker is gone (the harness reports it); its end of file comes next.
                                }
                            }
                        }
                    }
                }
            }
            try closeChecked(file, path)
        } catch {
            fail("\(error)")
        }
        shared.storeBytes(of: monotonicNanoseconds(), toByteOffset: finishedOffset, as: UInt64.self)
        shared.storeBytes(of: 1, toByteOffset: stateOffset, as: UInt64.self)
        _exit(0)
    }

    // MARK: The parent's side

    private var appended: UInt64 {
        UnsafeAtomic<UInt64>(at: (shared + Self.appendedOffset).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
            .load(ordering: .relaxed)
    }

    func finish(workersSucceeded: Bool, reaped: [pid_t: ProcessExit]) -> RunServiceOutcome {
        defer { munmap(shared, Self.pageSize) }
        var exit = reaped[pid]
        var problem: String?
        if exit == nil && workersSucceeded {
            switch waitWhileAppending() {
            case .exited(let status):
                exit = status
            case .stalled:
                problem = "appended nothing for \(Self.stallLimitNanoseconds / 1_000_000_000) s after the last worker exited"
                    + "; the harness killed it"
            case .lost(let error):
                problem = "could not be waited for: \(error)"
            }
        }
        // Still running: the workers failed (their errors say why), or the collector stalled.
        let stopped = exit == nil
        if stopped {
            kill(pid, SIGKILL)
            exit = (try? reapChild(pid, wait: true))?.exit
        }
        let state = shared.load(fromByteOffset: Self.stateOffset, as: UInt64.self)
        let setupCPU = shared.load(fromByteOffset: Self.setupDoneOffset, as: UInt64.self) == 1
            ? CPUTime.load(from: shared + Self.setupCPUOffset) : CPUTime()
        let cpu = (exit?.cpu ?? CPUTime()) - setupCPU
        let progress = "after appending \(appended) of \(expectedRecords) records"
        var failures: [String] = []
        if state == 2 {
            let length = Int(shared.load(fromByteOffset: Self.lengthOffset, as: UInt64.self))
            let message = String(decoding: UnsafeRawBufferPointer(start: shared + Self.messageOffset,
                                                                  count: min(length, Self.messageCapacity)), as: UTF8.self)
            failures.append("collector (pid \(pid)): \(message) (\(progress))")
        } else if let problem {
            failures.append("collector (pid \(pid)) \(problem) (\(progress))")
        } else if !stopped, let exit, !(exit.succeeded && state == 1) {
            failures.append("collector (pid \(pid)) \(exit) \(progress)")
        }
        let done = failures.isEmpty && !stopped && state == 1
        return RunServiceOutcome(finishedAt: done ? shared.load(fromByteOffset: Self.finishedOffset, as: UInt64.self) : nil,
                                 cpu: cpu, failures: failures)
    }

    private enum Waited {
        case exited(ProcessExit)
        case stalled
        case lost(Error)
    }

    /// Waits for the collector to append what is still queued and exit. Gives up only when it
    /// appends nothing for `stallLimitNanoseconds`: a deep queue is not a hang.
    private func waitWhileAppending() -> Waited {
        var seen = appended
        var deadline = monotonicNanoseconds() + Self.stallLimitNanoseconds
        while true {
            do {
                if let (_, exit) = try reapChild(pid, wait: false) { return .exited(exit) }
            } catch {
                return .lost(error)
            }
            let now = monotonicNanoseconds()
            if appended != seen {
                seen = appended
                deadline = now + Self.stallLimitNanoseconds
            } else if now > deadline {
                return .stalled
            }
            usleep(200)
        }
    }
}

/// A worker's end of the central log service: one connection to the run's collector.
struct CentralLogClient {
    private let socket: Int32
    private let name: String
    private let acknowledged: Bool

    /// Why `cla` and `cla-async` cannot run with `config`: a record must fit one message.
    static func unsupportedReason(config: BackendConfig) -> String? {
        if seqpacketCarries(config.recordSize) { return nil }
        return "a \(config.recordSize)-byte record does not fit one SOCK_SEQPACKET message here (send buffer "
            + "\(seqpacketSendBufferBytes().map(String.init) ?? "unknown") bytes, net.core.wmem_default)"
    }

    init(key: String, config: BackendConfig, acknowledged: Bool) throws {
        guard let address = config.serviceAddress else {
            throw HarnessError("\(key) has no collector to send to (its prepareRun was not called)")
        }
        name = "the collector @\(address)"
        socket = try connectSeqpacket(AbstractSocketAddress(name: address))
        self.acknowledged = acknowledged
    }

    /// Sends one record; acknowledged, waits until the collector has appended it.
    @inline(__always)
    func send(_ record: UnsafeRawBufferPointer) throws {
        try sendMessage(socket, record, name)
        guard acknowledged else { return }
        var answer: UInt8 = 0
        let received = try withUnsafeMutableBytes(of: &answer) { try receiveMessage(socket, into: $0, wait: true, name) }
        if received == .closed {
            throw HarnessError("recv(\(name)): the collector closed the connection before acknowledging (it failed or died)")
        }
    }

    func close() throws {
        try closeChecked(socket, name)
    }
}
