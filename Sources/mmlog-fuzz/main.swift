// mmlog-fuzz: corrupts a log's metadata, several fields at once across every table, and runs
// every entry point on it (opening to append, the reader, each `mmlog` command), each in a
// child process with a deadline, so that a crash or a hang is counted, not fatal. A live mode
// corrupts the header under running writers. `mmlog-fuzz --help` lists the options.
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import BenchRecords
import MMLog
import ToolSupport

struct Fuzz: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmlog-fuzz",
        abstract: "Corrupt an MMLog's metadata and run every entry point on it, each in a child with a deadline.",
        discussion: """
            Writes a log of 500 text records in --dir. Each case restores the data file, changes \
            the metadata (several fields at once: page-0 fields, writer slots, the hole table, \
            handle entries, rotation fields, void points, with boundary values; or a raw \
            corruption: truncation, bit flips, random bytes, trailing garbage), then runs, each as \
            a child process with --timeout: MMLogReader (committedOffset, read, holes, status), \
            `mmlog cat`, `mmlog tail -n 5`, `mmlog stat`, `mmlog stat --json`, then, each from the \
            same corrupted state, MMLog(path:) with one append and close (and a read after it), \
            `mmlog recover` and `mmlog rotate`. --live-cases N more cases corrupt the header \
            under two running mmlog-writer processes.

            Each run ends ok, with a clean error (exit 1, a message naming the file), or as a \
            failure: a crash (a signal), a hang (the deadline passed: killed), data damaged (a \
            byte of the records written before the corruption changed, or a record is gone \
            after a successful open), an unclear error (one that names neither file) or silent \
            wrong (exit 0 without records the header does not account for). Each failure is \
            printed with its seed and case, the fields changed, the command and the symptom; \
            `--seed S --case K` replays one case and prints every run; --backtrace makes \
            crashing children print where they trapped. Exit status: 0 with no failure; 1 \
            otherwise; 2 when the log cannot be set up; 64 on bad arguments.
            """)

    @Option(help: ArgumentHelp("Directory for the fuzzed log.", valueName: "path")) var dir: String
    @Option(help: "Corruptions to try.") var cases = 200
    @Option(help: ArgumentHelp("Seed of the corruptions, to replay a run (default: the time).", valueName: "N")) var seed: UInt64?
    @Option(name: .customLong("case"), help: ArgumentHelp("Run only this case of the seed, printing every run.", valueName: "K"))
    var only: Int?
    @Option(help: "Cases that corrupt the header under running writers (after the others).") var liveCases = 0
    @Option(help: ArgumentHelp("Seconds each child may run before it counts as a hang and is killed.", valueName: "s"))
    var timeout: Double = 10
    @Flag(help: "Let crashing children print the Swift runtime's backtrace (slow), to name the trapping line.")
    var backtrace = false
    @Flag(help: "With --case: only write that case's corrupted log in --dir, to run a command on it by hand.")
    var prepare = false
    @Option(help: .hidden) var child: String?

    func validate() throws {
        if dir.isEmpty { throw ValidationError("--dir must name a directory.") }
        if cases < 0 || liveCases < 0 { throw ValidationError("--cases and --live-cases take counts, at least 0.") }
        if let only, only < 0 { throw ValidationError("--case takes a case number, at least 0.") }
        if timeout <= 0 { throw ValidationError("--timeout takes seconds, more than 0.") }
    }

    func run() throws {
        if let child { runEntryPoint(child, path: dir + "/fuzz.log") }
        childBacktraces = backtrace
        var fuzzer = Fuzzer(directory: dir, seed: seed ?? UInt64(time(nil)), timeout: timeout, verbose: only != nil)
        fuzzer.prepareOnly = prepare
        if prepare && only == nil { throw ValidationError("--prepare needs --case.") }
        if let only {
            if only < cases || liveCases == 0 { fuzzer.runCase(only) } else { fuzzer.runLiveCase(only - cases) }
        } else {
            for n in 0..<cases { fuzzer.runCase(n) }
            for n in 0..<liveCases { fuzzer.runLiveCase(n) }
        }
        if prepare { return }
        fuzzer.printSummary(cases: only == nil ? cases + liveCases : 1)
        if fuzzer.failures > 0 { throw ExitCode.failure }
    }
}

/// A failure to set the fuzzing up: said on stderr, exit status 2.
func fail(_ message: String) -> Never {
    die(message, status: 2)
}

func readFile(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    if fd < 0 { return [] }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { chunk in retryingInterrupts { read(fd, chunk.baseAddress, chunk.count) } }
        if n <= 0 { break }
        bytes += buffer[0..<n]
    }
    return bytes
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    if fd < 0 { fail("open(\(path)): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    bytes.withUnsafeBytes { if !$0.isEmpty { _ = write(fd, $0.baseAddress, $0.count) } }
}

/// The files named `<path>.*` beside `path`, but metadata.
func rotatedFiles(besides path: String) -> [String] {
    let slash = path.lastIndex(of: "/")!
    let directory = String(path[..<slash]), base = String(path[path.index(after: slash)...])
    guard let dir = opendir(directory) else { return [] }
    defer { closedir(dir) }
    var found: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name.hasPrefix(base + "."), !name.hasSuffix(".mmlog") { found.append(directory + "/" + name) }
    }
    return found
}

Fuzz.main()
