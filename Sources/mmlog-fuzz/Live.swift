// The live mode: fields changed in the shared header while mmlog-writer processes append.
// A writer may then fail with an error that names the log, never die of a signal or hang;
// the records committed before the change stay as they were.
#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import MMLog
import ToolSupport

extension Fuzzer {
    static let liveWriters = 2

    mutating func runLiveCase(_ n: Int) {
        var random = caseRandom(1_000_000 + n)
        let livePath = directory + "/live.log"
        for file in rotatedFiles(besides: livePath) { unlink(file); unlink(file + ".mmlog") }
        unlink(livePath)
        unlink(livePath + ".mmlog")
        let label = "seed \(seed) live case \(n)"

        let writer = product("mmlog-writer")
        let children = (0..<Self.liveWriters).map { w in
            start(writer, ["--path", livePath, "--worker", "\(w)", "--ops", "3000", "--size", "64", "--text", "--rate", "1500",
                           "--chunk-size", "65536", "--sync-every", "500"], scratch: scratch)
        }
        // Let them append a while, then take what is committed: it must survive.
        let before = waitForRecords(livePath, bytes: 8192, deadline: monotonicNanoseconds() + 5_000_000_000)
        usleep(UInt32(random.below(100_000)))
        let header = readFile(livePath + ".mmlog")
        let (corruption, changes) = liveCorruption(header, dataSize: UInt64(before.count), &random)
        if verbose { printOut("live case \(n): \(corruption.description)") }
        let fd = open(livePath + ".mmlog", O_WRONLY)
        if fd >= 0 {
            for change in changes {
                var bytes = [UInt8](repeating: 0, count: change.field.width)
                for k in 0..<change.field.width { bytes[k] = UInt8(truncatingIfNeeded: change.value >> (8 * UInt64(k))) }
                _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(change.field.offset)) }
            }
            close(fd)
        }

        let deadline = monotonicNanoseconds() + UInt64(2 * timeout * 1e9)
        for (w, child) in children.enumerated() {
            let end = finish(child.pid, deadline: deadline)
            let ran = Ran(end: end, stdout: [], stderr: String(decoding: readFile(child.err), as: UTF8.self))
            unlink(child.out)
            unlink(child.err)
            judgeLive("mmlog-writer \(w) (header changed under it)", ran, livePath: livePath, before: before, label: label,
                      corruption: corruption)
        }
        defer {
            for file in rotatedFiles(besides: livePath) { unlink(file); unlink(file + ".mmlog") }
            unlink(livePath)
            unlink(livePath + ".mmlog")
        }
        // A reader and the operator's view after it all.
        for (command, arguments) in [("mmlog cat", ["cat", livePath]), ("mmlog stat", ["stat", livePath])] {
            let ran = runChild(product("mmlog"), arguments, scratch: scratch, timeoutSeconds: timeout)
            judgeLive("\(command) after live corruption", ran, livePath: livePath, before: nil, label: label,
                      corruption: corruption)
        }
    }

    /// The committed bytes of the log at `path` once at least `bytes` are (or at `deadline`).
    func waitForRecords(_ path: String, bytes: Int, deadline: UInt64) -> [UInt8] {
        while true {
            if let reader = try? MMLogReader(path: path), let end = try? reader.committedOffset(),
               end >= bytes || monotonicNanoseconds() >= deadline {
                var out: [UInt8] = []
                var offset = 0
                while offset < end, let (chunk, next) = try? reader.read(from: offset, upTo: end), next != offset {
                    out += chunk
                    offset = next
                }
                return out
            }
            if monotonicNanoseconds() >= deadline { return [] }
            usleep(5_000)
        }
    }

    /// One or two recipes, from the header as the writers left it a moment ago.
    func liveCorruption(_ header: [UInt8], dataSize: UInt64, _ random: inout SplitMix64) -> (Corruption, [Change]) {
        let now = Pristine(dataSize: dataSize, fileSize: Self.word(header, MetadataLayout.fileSizeOffset),
                           cursor: Cursor.offset(Self.word(header, MetadataLayout.cursorOffset)))
        var corruption = Corruption()
        for _ in 0..<(1 + random.below(2)) {
            corruption.changes += Recipe.allCases[random.below(Recipe.allCases.count)].changes(now, &random)
        }
        if random.below(2) == 0 {
            let field = Fields.any(&random)
            corruption.changes.append(Change(field: field, value: now.value(for: field, &random)))
        }
        corruption.mergeChanges()
        // A cursor moved far ahead under writers makes them allocate everything up to it (a
        // 2 GiB jump took 2 GiB of disk): on a shared machine, jump at most 16 MiB, unless
        // the offset is past the largest log (then the growth fails at once).
        let limit = dataSize + (16 << 20)
        for (k, change) in corruption.changes.enumerated() where change.field == Fields.cursor {
            let offset = Cursor.offset(change.value)
            if offset > limit && offset <= MetadataLayout.maxLogSize {
                corruption.changes[k].value = (change.value & ~Cursor.offsetMask) | limit
            }
        }
        return (corruption, corruption.changes)
    }

    /// A writer or reader after a live change: a signal or a timeout fails; an error must name
    /// the log; the bytes committed before the change (`before`; nil: not checked again) must
    /// still be there, in the log or in a file it was rotated to.
    mutating func judgeLive(_ command: String, _ ran: Ran, livePath: String, before: [UInt8]?, label: String, corruption: Corruption) {
        var judged = Judgement(ran, naming: [livePath], timeout: 2 * timeout)
        if judged.verdict != .hang && judged.verdict != .crash, let before {
            var after = readFile(livePath)
            if !after.starts(with: before),
               let moved = rotatedFiles(besides: livePath).map(readFile).first(where: { $0.starts(with: before) }) {
                after = moved
            }
            if !after.starts(with: before) {
                let first = zip(after, before).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(after.count, before.count)
                judged.fail(.writerDestroyed, kind: "committed bytes changed",
                            symptom: "\(judged.symptom); the \(before.count) bytes committed before the change differ at \(first) (file now \(after.count) bytes)")
            }
        }
        record(command, judged, ran, label: label, corruption: corruption,
               replay: "--seed \(seed) --cases 0 --live-cases 1 --case \(label.split(separator: " ").last!)")
    }
}
