// The fuzzing loop: set up a log, then for each case corrupt its header, run every entry point
// in a child, and judge each run.
#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import MMLog
import ToolSupport

/// How one run ended, judged.
enum Verdict: String {
    case ok, cleanError = "clean error", crash = "CRASH", hang = "HANG", damaged = "DAMAGE", unclear = "UNCLEAR",
         silentWrong = "SILENT WRONG"
    /// Committed bytes changed after the header was changed under running writers: a writer of
    /// the metadata can destroy the log (docs/design.md, "Security"): reported, not a failure.
    case writerDestroyed = "changed by a hostile writer (not defended)"
}

/// A verdict, what was seen, and what the failure groups by besides its entry point: the
/// trapping line (a crash) or the kind of wrong.
struct Judgement {
    var verdict: Verdict
    var symptom: String
    var kind = ""
    var location = ""

    /// How a child ended: a signal is a crash, the deadline a hang, exit 0 ok, exit 1 with a
    /// message that names one of `naming` a clean error; anything else an unclear error.
    init(_ ran: Ran, naming: [String], timeout: Double) {
        switch ran.end {
        case .timedOut:
            verdict = .hang
            symptom = "no end after \(timeout) s: killed"
        case .signaled(let signal):
            verdict = .crash
            symptom = signalName(signal)
            location = trapLocation(ran.stderr) ?? ""
        case .exited(0):
            verdict = .ok
            symptom = "exit 0"
        case .exited(let code):
            let message = ran.stderr.split(separator: "\n").first.map(String.init) ?? ""
            if code == 1 && !message.isEmpty && naming.contains(where: { ran.stderr.contains($0) }) {
                verdict = .cleanError
                symptom = "exit 1: \(message.prefix(200))"
            } else {
                verdict = .unclear
                symptom = "exit \(code): \(message.isEmpty ? "(no message)" : String(message.prefix(300)))"
            }
        }
    }

    mutating func fail(_ verdict: Verdict, kind: String, symptom: String) {
        self.verdict = verdict
        self.kind = kind
        self.symptom = symptom
    }
}

struct Fuzzer {
    let directory: String
    let path: String
    let metadataPath: String
    let scratch: String
    let seed: UInt64
    let timeout: Double
    let verbose: Bool
    /// Only write the corrupted state of the case (`--prepare`), to run a command on it by hand.
    var prepareOnly = false
    let data: [UInt8]
    let header: [UInt8]
    let pristine: Pristine
    /// Each original record's range in the data file and its line (without the newline).
    let records: [(range: Range<UInt64>, line: String)]
    let recordLines: Set<String>

    /// Verdicts per command, e.g. tally["mmlog stat"]["CRASH SIGILL"].
    var tally: [String: [String: Int]] = [:]
    var counts: [Verdict: Int] = [:]
    /// Distinct failures: (command, symptom, where) -> (how many, the first case).
    var distinct: [String: (count: Int, first: String)] = [:]
    /// Failures by where they happen (the trapping line, or the symptom), across entry points.
    var byPlace: [String: Place] = [:]

    struct Place {
        var first: String
        var runs = 0
        var entryPoints: Set<String> = []
        mutating func add(_ command: String) {
            runs += 1
            entryPoints.insert(command)
        }
    }

    var failures: Int {
        counts.filter { $0.key != .ok && $0.key != .cleanError && $0.key != .writerDestroyed }.map(\.value).reduce(0, +)
    }

    static let recordCount = 500

    init(directory: String, seed: UInt64, timeout: Double, verbose: Bool) {
        self.directory = directory
        self.path = directory + "/fuzz.log"
        self.metadataPath = path + ".mmlog"
        self.scratch = directory + "/children"
        self.seed = seed
        self.timeout = timeout
        self.verbose = verbose
        mkdir(directory, 0o755)
        mkdir(scratch, 0o755)
        for file in rotatedFiles(besides: path) { unlink(file); unlink(file + ".mmlog") }
        unlink(path)
        unlink(metadataPath)
        var records: [(range: Range<UInt64>, line: String)] = []
        var offset: UInt64 = 0
        do {
            let log = try MMLog(path: path, options: .init(chunkSize: 1 << 16))
            for i in 0..<Self.recordCount {
                let line = "record \(i) of the fuzzed log"
                try log.append(line + "\n")
                records.append((offset..<offset + UInt64(line.utf8.count + 1), line))
                offset += UInt64(line.utf8.count + 1)
            }
            try log.close()
        } catch {
            fail("setting up \(path): \(error)")
        }
        self.records = records
        self.recordLines = Set(records.map(\.line))
        data = readFile(path)
        header = readFile(metadataPath)
        if data.count != Int(offset) || header.count != MetadataLayout.metadataSize {
            fail("setting up \(path): the data file is \(data.count) bytes (expected \(offset)), its metadata \(header.count)")
        }
        pristine = Pristine(dataSize: UInt64(data.count), fileSize: Self.word(header, MetadataLayout.fileSizeOffset),
                            cursor: Cursor.offset(Self.word(header, MetadataLayout.cursorOffset)))
        printOut("mmlog-fuzz: seed \(seed), data \(data.count) bytes (\(Self.recordCount) records), header fileSize \(pristine.fileSize), cursor \(pristine.cursor)")
    }

    static func word(_ bytes: [UInt8], _ offset: Int, width: Int = 8) -> UInt64 {
        var value: UInt64 = 0
        for k in 0..<width where offset + k < bytes.count { value |= UInt64(bytes[offset + k]) << (8 * UInt64(k)) }
        return value
    }

    /// Each case has its own random stream, so `--case K` replays it alone.
    func caseRandom(_ n: Int) -> SplitMix64 {
        SplitMix64(seed: RecordFormat.splitmix64(seed ^ (UInt64(n) &* 0xD6E8_FEB8_6659_FD93)))
    }

    // MARK: One case

    mutating func runCase(_ n: Int) {
        var random = caseRandom(n)
        let (corruption, apply) = Corruption.make(pristine, headerSize: header.count, &random)
        var corrupted = header
        apply(&corrupted)
        let label = "seed \(seed) case \(n)"
        if verbose { printOut("case \(n): \(corruption.description)") }
        if prepareOnly {
            restore(corrupted)
            printOut("case \(n) prepared: run a command on \(path) by hand (SWIFT_BACKTRACE=enable=yes shows where it traps)")
            return
        }

        // Read-only entry points, all on the same corrupted state.
        restore(corrupted)
        let visible = visibleRecords(corrupted, boundedByHeader: true)
        let fuzz = product("mmlog-fuzz"), mmlog = product("mmlog")
        let readers: [(String, String, [String], Int?)] = [
            ("MMLogReader", fuzz, ["--child", "reader", "--dir", directory], visible),
            ("mmlog cat", mmlog, ["cat", path], visible),
            // A cursor changed to fall inside a record commits that record's first part: tail
            // prints it as the last of its 5 lines (as cat prints it), so 4 whole ones may do.
            ("mmlog tail -n 5", mmlog, ["tail", "-n", "5", path], visible.map { min($0, 4) }),
            ("mmlog stat", mmlog, ["stat", path], nil),
            ("mmlog stat --json", mmlog, ["stat", "--json", path], nil),
        ]
        for (command, executable, arguments, minimum) in readers {
            let ran = runChild(executable, arguments, scratch: scratch, timeoutSeconds: timeout)
            judge(command, ran, label: label, corruption: corruption, minimumRecords: minimum, modifies: false)
        }

        // Entry points that change the log: each from the same corrupted state.
        let writers: [(String, String, [String])] = [
            ("MMLog(path:)+append+close", fuzz, ["--child", "open", "--dir", directory]),
            ("mmlog recover", mmlog, ["recover", path]),
            ("mmlog rotate", mmlog, ["rotate", path]),
        ]
        for (command, executable, arguments) in writers {
            restore(corrupted)
            let ran = runChild(executable, arguments, scratch: scratch, timeoutSeconds: timeout)
            let verdict = judge(command, ran, label: label, corruption: corruption, minimumRecords: nil, modifies: true)
            // A log that opened keeps every record readable (but those the header's plausible
            // holes account for), unless it was rotated away (checked as bytes above).
            if verdict == .ok, rotatedFiles(besides: path).isEmpty {
                let after = runChild(fuzz, ["--child", "reader", "--dir", directory], scratch: scratch, timeoutSeconds: timeout)
                judge("MMLogReader after \(command)", after, label: label, corruption: corruption,
                      minimumRecords: visibleRecords(corrupted, boundedByHeader: false), modifies: false, afterOpen: true)
            }
        }
        for file in rotatedFiles(besides: path) { unlink(file); unlink(file + ".mmlog") }
    }

    /// Puts back the pristine data file and the corrupted header; removes rotated files. A
    /// rotation in an earlier run made a new data file: the header is made to record its
    /// identity (unless the corruption changed that field), so that every case starts from
    /// the same state, the live header of this data file.
    func restore(_ corrupted: [UInt8]) {
        for file in rotatedFiles(besides: path) { unlink(file); unlink(file + ".mmlog") }
        writeFile(path, data)
        var bytes = corrupted
        var st = stat()
        if stat(path, &st) == 0 {
            for (offset, value) in [(MetadataLayout.dataDeviceOffset, UInt64(st.st_dev)), (MetadataLayout.dataInodeOffset, UInt64(st.st_ino))]
            where offset + 8 <= bytes.count && Self.word(bytes, offset) == Self.word(header, offset) {
                Corruption.apply(Change(field: Field(name: "", offset: offset, width: 8), value: value), to: &bytes)
            }
        }
        writeFile(metadataPath, bytes)
    }

    // MARK: Judging

    /// Judges one run, counts it, and prints it when it failed (or always, replaying a case).
    /// `minimumRecords`: how many original records a successful run must print (nil: not
    /// checked). `modifies`: the data file's old bytes must still be there afterwards.
    @discardableResult
    mutating func judge(_ command: String, _ ran: Ran, label: String, corruption: Corruption, minimumRecords: Int?,
                        modifies: Bool, afterOpen: Bool = false) -> Verdict {
        var judged = Judgement(ran, naming: [path, directory], timeout: timeout)
        if judged.verdict == .ok, let minimumRecords {
            let printed = countRecords(ran.stdout)
            if printed < minimumRecords {
                judged.fail(afterOpen ? .damaged : .silentWrong,
                            kind: afterOpen ? "records unreadable after a successful open" : "exit 0 without records",
                            symptom: afterOpen
                                ? "after a successful open, \(printed) of the \(minimumRecords) records the header does not account for are readable"
                                : "exit 0, printed \(printed) of the \(minimumRecords) records the header does not account for (\(ran.stdout.count) bytes)")
            }
        }
        if modifies, judged.verdict != .hang, let damage = dataDamage() {
            judged.fail(.damaged, kind: "data file changed (\(ran.end == .exited(0) ? "exit 0" : "failed"))",
                        symptom: "\(judged.symptom); \(damage)")
        }
        record(command, judged, ran, label: label, corruption: corruption,
               replay: "--seed \(seed) --case \(label.split(separator: " ").last!)")
        return judged.verdict
    }

    /// Counts a judged run; prints it when it failed (every run when replaying a case).
    mutating func record(_ command: String, _ judged: Judgement, _ ran: Ran, label: String, corruption: Corruption, replay: String) {
        let verdict = judged.verdict, location = judged.location
        let key = verdict == .crash ? "CRASH \(judged.symptom)" : verdict.rawValue
        tally[command, default: [:]][key, default: 0] += 1
        counts[verdict, default: 0] += 1
        let at = location.isEmpty ? "" : " at \(location)"
        if verdict != .ok && verdict != .cleanError {
            let group = "\(command): \(verdict.rawValue) \(verdict == .crash ? judged.symptom : judged.kind)\(at)"
            distinct[group, default: (0, label)].count += 1
            let place = location.isEmpty ? "\(verdict.rawValue): \(judged.kind.isEmpty ? judged.symptom : judged.kind)" : "\(location): \(judged.symptom)"
            byPlace[place, default: Place(first: "\(label) (\(corruption.description.prefix(300)))")].add(command)
            printOut("\(verdict.rawValue) \(label): \(command): \(judged.symptom)\(at)")
            printOut("    changed: \(corruption.description)")
            printOut("    replay: mmlog-fuzz --dir \(directory) \(replay)")
        } else if verbose {
            printOut("  \(command): \(verdict.rawValue): \(judged.symptom)")
        }
        if verbose && verdict == .crash {
            // The runtime's message and the backtrace's frames (not its registers and images).
            let report = ran.stderr.split(separator: "\n").prefix { !$0.hasPrefix("Registers:") }
            printOut(report.map { "    | " + $0 }.joined(separator: "\n"))
        }
    }

    /// Distinct original records among the lines of `output`.
    func countRecords(_ output: [UInt8]) -> Int {
        var seen = Set<Substring>()
        for line in String(decoding: output, as: UTF8.self).split(separator: "\n") where recordLines.contains(String(line)) {
            seen.insert(line)
        }
        return seen.count
    }

    /// The data file's bytes below its old end changed (or moved whole to a rotated file)?
    func dataDamage() -> String? {
        var after = readFile(path)
        if after.count < data.count || Array(after[0..<data.count]) != data,
           let moved = rotatedFiles(besides: path).map(readFile).first(where: { $0.count >= data.count && Array($0[0..<data.count]) == data }) {
            after = moved
        }
        if after.count >= data.count && Array(after[0..<data.count]) == data { return nil }
        let first = zip(after, data).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(after.count, data.count)
        return "data file changed below its old end: first change at \(first), \(data.count) -> \(after.count) bytes"
    }

    /// How many original records a correct reader must show for this header: those below the
    /// header's cursor, allocated size and retirement point (when `boundedByHeader`; an opener
    /// keeps the bytes past the cursor), outside every *plausible* hole and dead writer's range
    /// (one that ends at or below the cursor and allocated size; a reservation is also at most
    /// 4 GiB - 1). Nil when the corruption broke what a reader checks first (the header is then
    /// refused or read as a plain file: nothing to compare).
    func visibleRecords(_ b: [UInt8], boundedByHeader: Bool) -> Int? {
        typealias L = MetadataLayout
        guard b.count == header.count else { return nil }
        for (offset, width) in [(L.magicOffset, 8), (L.versionOffset, 4), (L.headerSizeOffset, 4), (L.pageSizeOffset, 4),
                                (L.slotCountOffset, 4), (L.chunkSizeOffset, 8), (L.holeCapacityOffset, 4),
                                (L.metadataSizeOffset, 4), (L.stateOffset, 8)]
        where Self.word(b, offset, width: width) != Self.word(header, offset, width: width) {
            return nil
        }
        let word = Self.word(b, L.cursorOffset), cursor = Cursor.offset(word)
        let fileSize = Self.word(b, L.fileSizeOffset)
        let ceiling = min(cursor, fileSize)
        var visible = UInt64(data.count)
        if boundedByHeader {
            visible = min(visible, ceiling)
            if word & Cursor.retiredBit != 0 { visible = min(visible, Self.word(b, L.retiredAtOffset)) }
        }
        var hidden: [Range<UInt64>] = []
        for i in 0..<Int(min(Self.word(b, L.holeCountOffset), UInt64(L.holeCapacity))) {
            let start = Self.word(b, L.holesOffset + i * L.holeEntrySize), end = Self.word(b, L.holesOffset + i * L.holeEntrySize + 8)
            if end > start && end <= ceiling { hidden.append(start..<end) }
        }
        let high = Int(min(Self.word(b, L.slotHighWaterOffset), UInt64(L.slotCount - 1)))
        for i in Array(0..<high) + [L.slotCount - 1] {
            let slot = L.slotsOffset + i * L.slotSize
            let state = Self.word(b, slot + Slot.stateOffset), end = Self.word(b, slot + Slot.endOffset)
            guard state & (Slot.inFlight | Slot.exact) == Slot.inFlight | Slot.exact else { continue }
            let start = Cursor.offset(state)
            if end > start && end - start <= UInt64(L.maxRecordSize) && end <= ceiling { hidden.append(start..<end) }
        }
        return records.filter { record in
            record.range.upperBound <= visible && !hidden.contains { $0.overlaps(record.range) }
        }.count
    }

    // MARK: Summary

    func printSummary(cases: Int) {
        printOut("mmlog-fuzz: per entry point:")
        for (command, verdicts) in tally.sorted(by: { $0.key < $1.key }) {
            printOut("  \(command): " + verdicts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if !distinct.isEmpty {
            printOut("mmlog-fuzz: distinct failures (entry point, symptom, where; count; first case):")
            for (group, seen) in distinct.sorted(by: { $0.key < $1.key }) {
                printOut("  \(group); \(seen.count); \(seen.first)")
            }
        }
        if !byPlace.isEmpty {
            printOut("mmlog-fuzz: failures by where they trap (or what they do): runs; entry points; first case (its changes)")
            for (place, seen) in byPlace.sorted(by: { $0.key < $1.key }) {
                printOut("  \(place)\n      \(seen.runs) runs; \(seen.entryPoints.sorted().joined(separator: ", ")); \(seen.first)")
            }
        }
        let runs = counts.values.reduce(0, +)
        printOut("mmlog-fuzz: \(cases) cases, \(runs) runs (ok \(counts[.ok] ?? 0), clean errors \(counts[.cleanError] ?? 0)); "
                 + "crashes \(counts[.crash] ?? 0), hangs \(counts[.hang] ?? 0), data damaged \(counts[.damaged] ?? 0), "
                 + "unclear errors \(counts[.unclear] ?? 0), silent wrong \(counts[.silentWrong] ?? 0); "
                 + "committed bytes changed by a header changed under running writers \(counts[.writerDestroyed] ?? 0) (not defended)")
    }
}
