// mmlog-fuzz: opens an MMLog whose metadata was corrupted at random, thousands of times,
// each open in a forked child so that a crash is caught and counted, not fatal.
// `mmlog-fuzz --help` lists the options.
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
        abstract: "Open an MMLog whose metadata was corrupted at random, each case in a forked child.",
        discussion: """
            Writes a log of 500 records in --dir, then for each case restores its data file, \
            corrupts its metadata (truncation, bit flips, a random page, edge values in a field, \
            trailing garbage) and opens it in a child. Every case must end with a clear error \
            naming the file (or a harmless open) and leave the data file's existing bytes as they \
            were. Prints each crash, damage or unclear error, then a summary. Exit status: 0 with \
            no crash, no damage and no unclear error; 1 otherwise; 2 when the log cannot be set \
            up; 64 on bad arguments.
            """)

    @Option(help: ArgumentHelp("Directory for the fuzzed log.", valueName: "path")) var dir: String
    @Option(help: "Corruptions to try.") var cases = 3000
    @Option(help: ArgumentHelp("Seed of the corruptions, to replay a run (default: the time).", valueName: "N")) var seed: UInt64?

    func validate() throws {
        if dir.isEmpty { throw ValidationError("--dir must name a directory.") }
        if cases < 1 { throw ValidationError("--cases must be at least 1 (got \(cases)).") }
    }

    func run() throws {
        let clean = fuzz(directory: dir, cases: cases, seed: seed ?? UInt64(time(nil)))
        if !clean { throw ExitCode.failure }
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

/// Fields of the header (from the library's own layout), and edge values worth trying in them.
let fields: [(offset: Int, width: Int)] = {
    typealias L = MetadataLayout
    return [(L.magicOffset, 8), (L.versionOffset, 4), (L.headerSizeOffset, 4), (L.pageSizeOffset, 4),
            (L.slotCountOffset, 4), (L.chunkSizeOffset, 8), (L.holeCapacityOffset, 4), (L.metadataSizeOffset, 4),
            (L.stateOffset, 8), (L.trimCursorOffset, 8), (L.cleanOffset, 8), (L.dataDeviceOffset, 8),
            (L.dataInodeOffset, 8), (L.bootIDOffset, 8), (L.fileSizeOffset, 8), (L.cursorOffset, 8),
            (L.durableOffset, 8), (L.holeCountOffset, 8), (L.slotHighWaterOffset, 8), (L.voidPointsOffset, 8),
            (L.slotsOffset, 8), (L.slotsOffset + 8, 8), (L.holesOffset, 8), (L.holesOffset + 8, 8)]
}()
let edges: [UInt64] = [0, 1, 4095, 4096, 4097, 8192, 1 << 20, (1 << 48) - 1, 1 << 48, 1 << 62, 1 << 63, (1 << 63) | 5, .max]

/// One random corruption of `header`; returns it and a short name of what was done.
func corrupt(_ header: [UInt8], _ random: inout SplitMix64) -> ([UInt8], String) {
    var bytes = header
    switch random.below(6) {
    case 0:
        let length = random.below(header.count)
        return (Array(bytes[0..<length]), "truncated to \(length)")
    case 1:
        let flips = 1 + random.below(8)
        for _ in 0..<flips {
            let bit = random.below(min(header.count, MetadataLayout.headerSize + 4 * MetadataLayout.slotSize) * 8)
            bytes[bit / 8] ^= UInt8(1 << (bit % 8))
        }
        return (bytes, "\(flips) bits flipped")
    case 2:
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: random.next()) }
        return (bytes, "random page")
    case 3, 4:
        let field = fields[random.below(fields.count)]
        let value = random.below(2) == 0 ? edges[random.below(edges.count)] : random.next()
        for k in 0..<field.width { bytes[field.offset + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
        return (bytes, "field at \(field.offset) = \(value)")
    default:
        let extra = 1 + random.below(8192)
        return (bytes + (0..<extra).map { _ in UInt8(truncatingIfNeeded: random.next()) }, "\(extra) bytes of garbage appended")
    }
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

/// Runs `cases` corruptions of a log in `directory`; true when none crashed, damaged the
/// data or gave an error that does not name the file.
func fuzz(directory: String, cases: Int, seed: UInt64) -> Bool {
    let path = directory + "/fuzz.log"
    let metadataPath = path + ".mmlog"
    unlink(path)
    unlink(metadataPath)
    do {
        let log = try MMLog(path: path, options: .init(chunkSize: 1 << 16))
        for i in 0..<500 { try log.append("record \(i) of the fuzzed log\n") }
        try log.close()
    } catch {
        fail("setting up: \(error)")
    }
    let data = readFile(path)
    let header = readFile(metadataPath)
    printOut("mmlog-fuzz: seed \(seed), \(cases) cases, data \(data.count) bytes")

    var random = SplitMix64(seed: seed)
    var outcomes: [String: Int] = [:]
    var crashes = 0, damaged = 0, unclear = 0
    for n in 0..<cases {
        writeFile(path, data)
        let (bytes, what) = corrupt(header, &random)
        writeFile(metadataPath, bytes)
        var pipeFDs: [Int32] = [0, 0]
        pipe(&pipeFDs)
        let pid = fork()
        if pid == 0 {
            close(pipeFDs[0])
            var message: String
            var code: Int32
            do {
                let log = try MMLog(path: path)
                try log.append("appended by case \(n)\n")
                try log.close()
                message = "opened"
                code = 0
            } catch {
                message = "\(error.kind)\t\(error)"
                code = 3
            }
            message.withUTF8 { _ = write(pipeFDs[1], $0.baseAddress, $0.count) }
            _exit(code)
        }
        close(pipeFDs[1])
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = buffer.withUnsafeMutableBytes { chunk in retryingInterrupts { read(pipeFDs[0], chunk.baseAddress, chunk.count) } }
            if got <= 0 { break }
            reply += buffer[0..<got]
        }
        close(pipeFDs[0])
        var status: Int32 = 0
        _ = retryingInterrupts { Int(waitpid(pid, &status, 0)) }
        let text = String(decoding: reply, as: UTF8.self)
        if status & 0x7f != 0 {
            crashes += 1
            printOut("CRASH case \(n) (\(what)): signal \(status & 0x7f)")
            continue
        }
        // A corrupted header may hold a rotation (the retired bit, a small rotateAtBytes): the
        // data then moves, whole, to a rotated file beside the path. That keeps it; the
        // rotated files are removed before the next case.
        let rotated = rotatedFiles(besides: path)
        defer { for file in rotated { unlink(file); unlink(file + ".mmlog") } }
        var after = readFile(path)
        if after.count < data.count, let moved = rotated.map(readFile).first(where: { $0.count >= data.count && Array($0[0..<data.count]) == data }) {
            after = moved
            outcomes["(rotated, data intact)", default: 0] += 1
        }
        if after.count < data.count || Array(after[0..<data.count]) != data {
            damaged += 1
            let first = zip(after, data).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(after.count, data.count)
            printOut("DAMAGE case \(n) (\(what)): data file changed below its old end (\(text)): first change at \(first), \(data.count) -> \(after.count) bytes")
        }
        if text == "opened" {
            outcomes["opened", default: 0] += 1
        } else {
            let kind = String(text.prefix { $0 != "\t" })
            outcomes["refused: \(kind)", default: 0] += 1
            if !text.contains(".mmlog") && !text.contains(path) {
                unclear += 1
                printOut("UNCLEAR case \(n) (\(what)): \(text)")
            }
        }
    }
    let summary = outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    printOut("mmlog-fuzz: \(cases) cases: \(summary); crashes \(crashes), data damaged \(damaged), unclear errors \(unclear)")
    return crashes == 0 && damaged == 0 && unclear == 0
}

Fuzz.main()
