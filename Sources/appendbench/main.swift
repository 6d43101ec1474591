#if canImport(Glibc)
import Glibc
#endif
import AppendBenchCore
import ArgumentParser
import MMLogArguments
import ToolSupport

/// The root command. Synchronous on purpose: workers are forked from this single thread.
struct AppendBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "appendbench",
        abstract: "Measure ways of appending records to one file from many processes, and verify every byte.",
        discussion: """
        Forks --procs worker processes. Each opens the backend, waits at a common start barrier, \
        appends --ops records of --size bytes, and closes. Total Time runs from the barrier's \
        release until the last worker has closed (and, for the central log service, its collector \
        has appended the last record and closed the file; for journald and syslog, the daemon the \
        run started holds the last record in its journal or file). Afterwards every byte of the output is read back \
        and checked: every record present once, whole, and (where the backend writes one record at \
        a time) in order. A run that fails or does not verify is reported as such and makes the \
        exit status non-zero.

        Backends: \(Backends.all.map { "\($0.key) (\($0.category))" }.joined(separator: ", ")).

        journald and syslog start their own systemd-journald (as root, in a private mount \
        namespace) and syslog-ng for each run, write text records (no NUL, no newline) and read \
        every one back (journal files, <dir>/syslog.log); without root or the daemons their rows \
        say why they did not run.

        Every row also gives the CPU time its processes used per call (workers and, for the \
        central log service, its collector, for journald and syslog the daemon; from the \
        barrier's release until they exited) and \
        the bytes the output's block device wrote during the run over the payload bytes \
        (Write Amp.; n/a without a block device, e.g. on tmpfs; other writes to the device \
        count too).

        Throughput is payload bytes / seconds / 1e9. Exit status: 0 when every backend that ran \
        verified, 1 when any failed or did not verify, 64 on bad arguments.
        """)

    @Option(name: .long, help: "Worker processes.")
    var procs = 4

    @Option(name: .long, help: "Records each worker appends.")
    var ops = 100_000

    @Option(name: .long, help: "Bytes per record (1 or more).")
    var size = 128

    @Option(name: .long, help: ArgumentHelp("Backends to run: all, or a comma-separated list.", valueName: "all|k1,k2"))
    var backends = "all"

    @Option(name: .long, help: "Repeat each backend this many times (interleaved) and report the median run.")
    var runs = 1

    @Option(name: .long, help: ArgumentHelp("Directory for the output files (created if missing). Default: a new temporary directory, removed afterwards.", valueName: "path"))
    var dir: String?

    @Flag(name: .long, help: "Keep each backend's output as <dir>/<key>.log (mmlog also its .mmlog; journald also its journal, <dir>/journald/, which journalctl --directory reads).")
    var keep = false

    @Option(name: .long, help: ArgumentHelp("Append one CSV row per backend per run to this file.", valueName: "file"))
    var csv: String?

    @Option(name: .long, help: ArgumentHelp("Write the results as JSON to this file.", valueName: "file"))
    var json: String?

    @Flag(name: .long, help: "Record every call's latency (HdrHistogram) and add p50, p99, p99.9 and max columns.")
    var latency = false

    @Option(name: .long, help: "Records per writev() call, and per fflush() for fwrite.")
    var batch = 1

    @Option(name: .long, help: "Records in flight for aio and uring.")
    var depth = 1

    @OptionGroup var mmlog: MMLogFlags

    @Option(name: .customLong("fsync-every"), help: ArgumentHelp("Make records durable (fdatasync; msync for floor) after every N records per worker; for cla and cla-async the collector runs fdatasync after every N records it appends (1: the article's original service: append, fsync, answer); for journald every Nth record of each worker goes at priority crit (journald syncs on it); for syslog syslog-ng writes at most N lines at a time and fsyncs after each write; 0: never.", valueName: "N"))
    var fsyncEvery = 0

    @Option(name: .long, help: ArgumentHelp("Records per second each worker appends, paced against an absolute schedule from the start barrier (sleeping between records; a late worker catches up without sleeping). With --latency, latency then runs from each record's scheduled time (coordinated omission corrected). 0: as fast as it can.", valueName: "N"))
    var rate = 0

    @Option(name: .long, help: ArgumentHelp("Record throughput per interval of MS milliseconds into --timeline-csv, with the dirty page limits.", valueName: "MS"))
    var timeline = 0

    @Option(name: .customLong("timeline-csv"), help: ArgumentHelp("Where --timeline appends its series.", valueName: "file"))
    var timelineCSV = "appendbench-timeline.csv"

    @Flag(name: .customLong("warm-memory"), inversion: .prefixedNo, help: "Before each run, touch and release twice as much memory as the run writes, so every backend draws on memory the hypervisor already backs (see README: a VM that reports free memory to its host makes fresh 2 MiB pages slow).")
    var warmMemory = true

    @Flag(name: .customLong("hold-page-reporting"), help: "As root in a VM with free page reporting: hold it off for this invocation (page_reporting_order past the largest block, put back at exit or on SIGINT, SIGTERM, SIGHUP or SIGQUIT), so no run draws on memory the host just took back.")
    var holdPageReporting = false

    @Flag(name: .long, help: "No progress lines on stderr.")
    var quiet = false

    var backendKeys: [String] {
        backends == "all" ? Backends.keys : backends.split(separator: ",").map { String($0).trimmingSpaces }
    }

    func validate() throws {
        for (name, value) in [("--procs", procs), ("--ops", ops), ("--size", size), ("--runs", runs), ("--batch", batch), ("--depth", depth)]
        where value < 1 {
            throw ValidationError("\(name) must be at least 1 (got \(value)).")
        }
        if fsyncEvery < 0 { throw ValidationError("--fsync-every must be 0 (never) or more (got \(fsyncEvery)).") }
        if timeline < 0 { throw ValidationError("--timeline must be a positive number of milliseconds (got \(timeline)).") }
        if rate < 0 { throw ValidationError("--rate must be 0 (unlimited) or a number of records per second (got \(rate)).") }
        if rate > 1_000_000_000 { throw ValidationError("--rate \(rate) is more than one record per nanosecond.") }
        if procs > 1024 { throw ValidationError("--procs \(procs) is more than 1024 worker processes.") }
        if size > 1 << 30 { throw ValidationError("--size \(size) is over 1 GiB; records are at most 1073741824 bytes.") }
        if depth > 4096 { throw ValidationError("--depth \(depth) is over 4096.") }
        let keys = backendKeys
        if keys.isEmpty { throw ValidationError("--backends names no backend.") }
        for key in keys where Backends.named(key) == nil {
            throw ValidationError("unknown backend '\(key)'; choose from: all, \(Backends.keys.joined(separator: ", ")).")
        }
        if Set(keys).count != keys.count { throw ValidationError("--backends names a backend twice.") }
    }

    func run() throws {
        var options = BenchmarkOptions()
        options.procs = procs
        options.ops = ops
        options.size = size
        options.backends = backendKeys
        options.runs = runs
        options.directory = dir
        options.keep = keep
        options.batch = batch
        options.depth = depth
        options.mmlog = mmlog.options
        options.latency = latency
        options.fsyncEvery = fsyncEvery
        options.timelineMilliseconds = timeline
        options.warmMemory = warmMemory
        options.holdPageReporting = holdPageReporting
        options.rate = rate

        let showProgress = !quiet && standardErrorIsTerminal
        var progressShown = false
        let report: BenchmarkReport
        do {
            report = try Benchmark.run(options, status: showProgress ? { line in
                writeStandardError("\r\u{1B}[K" + line)
                progressShown = true
            } : nil)
        } catch {
            writeStandardError("appendbench: \(error)\n")
            throw ExitCode(1)
        }
        if progressShown { writeStandardError("\r\u{1B}[K") }
        print(report.table)
        if keep { print("Output kept in \(report.directory).") }
        do {
            if let csv { try report.appendCSV(to: csv) }
            if let json { try report.writeJSON(to: json) }
            if timeline > 0 { try report.appendTimeline(to: timelineCSV) }
        } catch {
            writeStandardError("appendbench: \(error)\n")
            throw ExitCode(1)
        }
        if !report.ok { throw ExitCode(1) }
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}

AppendBench.main()

