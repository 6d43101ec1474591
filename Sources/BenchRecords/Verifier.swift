#if canImport(Glibc)
import Glibc
#endif

/// What a verifier expects to find in an output file.
public struct Expectation: Sendable {
    /// Records each worker set out to write (`planned[w]` for worker `w`).
    public var planned: [Int]
    /// Workers that may have died part way. Their records must be a whole prefix
    /// `0..<n` (any `n`), and each may leave one slot that is not a whole record.
    public var killed: Set<Int>
    /// Record size in bytes.
    public var size: Int
    /// Bytes each record occupies in the file (`size`, or the padded size).
    public var stride: Int
    /// Check that each worker's records appear in increasing index order.
    public var checkOrder: Bool
    /// How records are spelt. Text records end with a newline in the file (stride `size + 1`);
    /// binary records are padded with zeros up to the stride.
    public var encoding: RecordEncoding

    public init(workers: Int, ops: Int, size: Int, stride: Int? = nil, checkOrder: Bool = true,
                encoding: RecordEncoding = .binary) {
        self.init(planned: Array(repeating: ops, count: workers), size: size, stride: stride, checkOrder: checkOrder,
                  encoding: encoding)
    }

    public init(planned: [Int], killed: Set<Int> = [], size: Int, stride: Int? = nil, checkOrder: Bool = true,
                encoding: RecordEncoding = .binary) {
        self.planned = planned
        self.killed = killed
        self.size = size
        self.stride = stride ?? (encoding == .text ? size + 1 : size)
        self.checkOrder = checkOrder
        self.encoding = encoding
    }

    public var workers: Int { planned.count }

    /// The byte after each record, up to the stride: a newline after a text record, else zeros.
    var padding: UInt8 { encoding == .text ? 0x0A : 0 }
}

/// The outcome of checking every byte of an output file.
public struct VerificationReport: Sendable, CustomStringConvertible {
    /// Slots of `stride` bytes in the file.
    public var slots = 0
    /// Slots that hold one whole, correct record.
    public var wholeRecords = 0
    /// Slots that are not a whole record, not excused by a killed worker.
    public var torn = 0
    /// Slots that are not a whole record, excused by a killed worker (at most one each).
    public var holes = 0
    /// Records found more than once.
    public var duplicates = 0
    /// Records of surviving workers that were never found.
    public var missing = 0
    /// Records found after a later record of the same worker.
    public var outOfOrder = 0
    /// Bytes past the last whole slot (the file size is not a multiple of the stride).
    public var trailingBytes = 0
    /// Records found per worker.
    public var perWorker: [Int] = []
    /// The first few problems, with their file offsets.
    public var problems: [String] = []

    public init() {}

    public var ok: Bool {
        torn == 0 && duplicates == 0 && missing == 0 && outOfOrder == 0 && trailingBytes == 0 && problems.isEmpty
    }

    public var description: String {
        if ok {
            return "verified: \(wholeRecords) records in \(slots) slots" + (holes > 0 ? ", \(holes) holes from killed writers" : "")
        }
        var parts = ["FAILED: \(wholeRecords) whole records in \(slots) slots"]
        if torn > 0 { parts.append("\(torn) torn") }
        if missing > 0 { parts.append("\(missing) missing") }
        if duplicates > 0 { parts.append("\(duplicates) duplicated") }
        if outOfOrder > 0 { parts.append("\(outOfOrder) out of order") }
        if trailingBytes > 0 { parts.append("\(trailingBytes) trailing bytes") }
        return parts.joined(separator: ", ") + (problems.isEmpty ? "" : "; " + problems.joined(separator: "; "))
    }

    mutating func note(_ problem: @autoclosure () -> String) {
        if problems.count < 8 { problems.append(problem()) }
    }
}

public enum Verifier {
    /// Checks every byte of `bytes` against `expectation`.
    public static func verify(_ bytes: UnsafeRawBufferPointer, _ expectation: Expectation) -> VerificationReport {
        precondition(expectation.size > 0 && expectation.stride >= expectation.size)
        precondition(expectation.encoding == .binary || expectation.stride == expectation.size + 1)
        if expectation.size < RecordFormat.headerSize {
            return verifyLetters(bytes, expectation)
        }
        return verifyHeadered(bytes, expectation)
    }

    /// Maps the file at `path` read-only and verifies it.
    public static func verify(path: String, _ expectation: Expectation) throws -> VerificationReport {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw VerifierError(message: "open(\(path)): \(String(cString: strerror(errno)))") }
        defer { _ = Glibc.close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw VerifierError(message: "fstat(\(path)): \(String(cString: strerror(errno)))") }
        let length = Int(st.st_size)
        if length == 0 {
            return verify(UnsafeRawBufferPointer(start: nil, count: 0), expectation)
        }
        guard let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw VerifierError(message: "mmap(\(path), \(length)): \(String(cString: strerror(errno)))")
        }
        defer { munmap(map, length) }
        _ = madvise(map, length, MADV_SEQUENTIAL)
        return verify(UnsafeRawBufferPointer(start: map, count: length), expectation)
    }

    private static func verifyHeadered(_ bytes: UnsafeRawBufferPointer, _ e: Expectation) -> VerificationReport {
        var report = VerificationReport()
        let stride = e.stride, size = e.size, workers = e.workers
        report.slots = bytes.count / stride
        report.trailingBytes = bytes.count % stride
        if report.trailingBytes > 0 {
            report.note("file size \(bytes.count) is not a multiple of the \(stride)-byte stride")
        }
        var seen = e.planned.map { Bitset(count: $0) }
        var lastIndex = [Int](repeating: -1, count: workers)
        var maxIndex = [Int](repeating: -1, count: workers)
        report.perWorker = [Int](repeating: 0, count: workers)
        var holesLeft = e.killed.count
        guard let base = bytes.baseAddress else { return finish(&report, e, seen, maxIndex) }

        for slot in 0..<report.slots {
            let offset = slot * stride
            let record = base + offset
            let w: Int, s: Int, i64: UInt64
            if e.encoding == .text {
                // A text record's size is its line's length: a longer or shorter one moves the
                // next newline, which the padding check catches.
                let header = RecordFormat.parseTextHeader(record)
                (w, s, i64) = (Int(clamping: header?.worker ?? .max), header == nil ? -1 : size, header?.index ?? .max)
            } else {
                w = Int(UInt32(littleEndian: record.loadUnaligned(as: UInt32.self)))
                s = Int(UInt32(littleEndian: record.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
                i64 = UInt64(littleEndian: record.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            }
            let identified = w < workers && s == size && i64 < UInt64(e.planned[w])
            if !identified || !bodyMatches(record, worker: w, index: Int(i64), size: size, stride: stride, e.encoding) {
                if holesLeft > 0 {
                    holesLeft -= 1
                    report.holes += 1
                } else {
                    report.torn += 1
                    report.note(identified
                        ? "torn record (worker \(w), index \(i64)) at offset \(offset)"
                        : "unrecognised slot at offset \(offset)")
                }
                continue
            }
            let i = Int(i64)
            if seen[w].testAndSet(i) {
                report.duplicates += 1
                report.note("record (worker \(w), index \(i)) again at offset \(offset)")
                continue
            }
            report.wholeRecords += 1
            report.perWorker[w] += 1
            if e.checkOrder && i < lastIndex[w] {
                report.outOfOrder += 1
                report.note("record (worker \(w), index \(i)) at offset \(offset) after index \(lastIndex[w])")
            }
            lastIndex[w] = max(lastIndex[w], i)
            maxIndex[w] = max(maxIndex[w], i)
        }
        return finish(&report, e, seen, maxIndex)
    }

    private static func finish(_ report: inout VerificationReport, _ e: Expectation, _ seen: [Bitset], _ maxIndex: [Int]) -> VerificationReport {
        if report.perWorker.isEmpty { report.perWorker = [Int](repeating: 0, count: e.workers) }
        for w in 0..<e.workers {
            let found = report.perWorker[w]
            if e.killed.contains(w) {
                // A killed writer's records are a whole prefix: 0..<n with nothing skipped.
                let gap = (maxIndex[w] + 1) - found
                if gap > 0 {
                    report.missing += gap
                    report.note("killed worker \(w): \(gap) records missing below its last record \(maxIndex[w])")
                }
            } else if found < e.planned[w] {
                report.missing += e.planned[w] - found
                if let first = seen[w].firstClear() {
                    report.note("worker \(w): \(e.planned[w] - found) records missing, first index \(first)")
                }
            }
        }
        return report
    }

    @inline(__always)
    private static func bodyMatches(_ record: UnsafeRawPointer, worker: Int, index: Int, size: Int, stride: Int,
                                    _ encoding: RecordEncoding) -> Bool {
        if encoding == .text { return textBodyMatches(record, worker: worker, index: index, size: size) }
        let word = RecordFormat.bodyWord(worker: worker, index: index).littleEndian
        var offset = RecordFormat.headerSize
        while offset + 8 <= size {
            if record.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != word { return false }
            offset += 8
        }
        var shift = UInt64(0)
        while offset < size {
            if record.load(fromByteOffset: offset, as: UInt8.self) != UInt8(truncatingIfNeeded: UInt64(littleEndian: word) >> shift) {
                return false
            }
            offset += 1
            shift += 8
        }
        while offset < stride {  // padding is zeros
            if record.load(fromByteOffset: offset, as: UInt8.self) != 0 { return false }
            offset += 1
        }
        return true
    }

    /// A text record's body and the newline after it.
    @inline(__always)
    private static func textBodyMatches(_ record: UnsafeRawPointer, worker: Int, index: Int, size: Int) -> Bool {
        let word = RecordFormat.bodyWord(worker: worker, index: index)
        for k in RecordFormat.headerSize..<max(size, RecordFormat.headerSize)
        where record.load(fromByteOffset: k, as: UInt8.self) != RecordFormat.base64Alphabet[Int((word >> UInt64(8 * (k % 8))) & 63)] {
            return false
        }
        return record.load(fromByteOffset: size, as: UInt8.self) == 0x0A
    }

    /// Records under 16 bytes carry no identity: every slot must be one worker's letter,
    /// and each letter must appear exactly as often as its workers wrote records.
    private static func verifyLetters(_ bytes: UnsafeRawBufferPointer, _ e: Expectation) -> VerificationReport {
        var report = VerificationReport()
        let stride = e.stride, size = e.size
        report.slots = bytes.count / stride
        report.trailingBytes = bytes.count % stride
        if report.trailingBytes > 0 {
            report.note("file size \(bytes.count) is not a multiple of the \(stride)-byte stride")
        }
        var expected = [Int](repeating: 0, count: 26)
        for w in 0..<e.workers { expected[w % 26] += e.planned[w] }
        var found = [Int](repeating: 0, count: 26)
        var holesLeft = e.killed.count
        let padding = e.padding
        if let base = bytes.baseAddress {
            for slot in 0..<report.slots {
                let offset = slot * stride
                let first = base.load(fromByteOffset: offset, as: UInt8.self)
                var whole = first >= 0x41 && first < 0x41 + 26 && expected[Int(first - 0x41)] > 0
                var k = 1
                while whole && k < stride {
                    let b = base.load(fromByteOffset: offset + k, as: UInt8.self)
                    whole = (k < size) ? b == first : b == padding
                    k += 1
                }
                if whole {
                    found[Int(first - 0x41)] += 1
                    report.wholeRecords += 1
                } else if holesLeft > 0 {
                    holesLeft -= 1
                    report.holes += 1
                } else {
                    report.torn += 1
                    report.note("torn or foreign slot at offset \(offset)")
                }
            }
        }
        for letter in 0..<26 where found[letter] != expected[letter] {
            let name = Character(Unicode.Scalar(UInt8(0x41 + letter)))
            if found[letter] > expected[letter] {
                report.duplicates += found[letter] - expected[letter]
                report.note("letter \(name): \(found[letter]) records, expected \(expected[letter])")
            } else if !e.killed.contains(where: { $0 % 26 == letter }) {
                report.missing += expected[letter] - found[letter]
                report.note("letter \(name): \(found[letter]) records, expected \(expected[letter])")
            }
        }
        report.perWorker = (0..<e.workers).map { w in
            e.workers <= 26 ? found[w] : -1  // unknowable when letters are shared
        }
        return report
    }
}

public struct VerifierError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// A fixed-size bit set, one bit per record index.
struct Bitset {
    private var words: [UInt64]
    let count: Int

    init(count: Int) {
        self.count = count
        words = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    /// Sets bit `i`; returns whether it was already set.
    @inline(__always)
    mutating func testAndSet(_ i: Int) -> Bool {
        let mask = UInt64(1) << UInt64(i & 63)
        let was = words[i >> 6] & mask != 0
        words[i >> 6] |= mask
        return was
    }

    func firstClear() -> Int? {
        for (n, word) in words.enumerated() where word != .max {
            let i = n * 64 + (~word).trailingZeroBitCount
            return i < count ? i : nil
        }
        return nil
    }
}
