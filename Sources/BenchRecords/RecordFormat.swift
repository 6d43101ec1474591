/// The record format every appendbench worker writes and every verifier checks.
///
/// Worker `w` (0-based) writes records `i = 0..<ops` of `size` bytes, little-endian:
/// - `size >= 16`: bytes 0-3 `UInt32(w)`, 4-7 `UInt32(size)`, 8-15 `UInt64(i)`, and byte `k`
///   for `16 <= k < size` is byte `k % 8` of `splitmix64((UInt64(w) << 32) | UInt64(i))`.
/// - `size < 16`: every byte is `0x41 + w % 26` (an ASCII capital letter).
///
/// A record occupies `stride` bytes in the file: `size`, or more when a backend pads
/// (O_DIRECT pads with zeros up to the filesystem's alignment).
///
/// A service that takes lines (journald, syslog) needs text: no NUL, no newline. Its records
/// are `RecordEncoding.text`, the same identity and body spelt in printable ASCII, `size`
/// bytes each; the service ends each with a newline in its output, so the stride is `size + 1`:
/// - `size >= 16`: bytes 0-3 `w` as 4 lowercase hex digits, 4-15 `i` as 12, and byte `k` for
///   `16 <= k < size` is `base64Alphabet[b & 63]`, `b` byte `k % 8` of the same splitmix64
///   word as the binary body.
/// - `size < 16`: the binary form, which is already text (one capital letter per worker).
public enum RecordFormat {
    /// Records of at least this many bytes carry a header and can be identified.
    public static let headerSize = 16

    /// The standard splitmix64 finaliser.
    @inline(__always)
    public static func splitmix64(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The fill byte of every record written by `worker` when records are shorter than 16 bytes.
    @inline(__always)
    public static func letter(worker: Int) -> UInt8 {
        UInt8(0x41 + worker % 26)
    }

    /// The 8-byte body pattern of record (worker, index), as a little-endian word.
    @inline(__always)
    public static func bodyWord(worker: Int, index: Int) -> UInt64 {
        splitmix64((UInt64(truncatingIfNeeded: worker) << 32) | UInt64(truncatingIfNeeded: index))
    }

    /// Writes record (worker, index) into `record`, whose count is the record size.
    /// Allocates nothing; the cost is one store per 8 bytes.
    @inline(__always)
    public static func encode(worker: Int, index: Int, into record: UnsafeMutableRawBufferPointer) {
        let size = record.count
        guard let base = record.baseAddress, size > 0 else { return }
        if size < headerSize {
            base.initializeMemory(as: UInt8.self, repeating: letter(worker: worker), count: size)
            return
        }
        base.storeBytes(of: UInt32(truncatingIfNeeded: worker).littleEndian, as: UInt32.self)
        base.storeBytes(of: UInt32(truncatingIfNeeded: size).littleEndian, toByteOffset: 4, as: UInt32.self)
        base.storeBytes(of: UInt64(truncatingIfNeeded: index).littleEndian, toByteOffset: 8, as: UInt64.self)
        let word = bodyWord(worker: worker, index: index).littleEndian
        var offset = headerSize
        while offset + 8 <= size {
            base.storeBytes(of: word, toByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        withUnsafeBytes(of: word) { bytes in
            var k = 0
            while offset < size {
                base.storeBytes(of: bytes[k], toByteOffset: offset, as: UInt8.self)
                offset += 1
                k += 1
            }
        }
    }

    /// The record (worker, index) as a new array; for tests and tools, not hot paths.
    public static func record(worker: Int, index: Int, size: Int, _ encoding: RecordEncoding = .binary) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: size)
        bytes.withUnsafeMutableBytes { encode(worker: worker, index: index, into: $0, encoding) }
        return bytes
    }

    /// Writes record (worker, index) in `encoding` into `record`.
    @inline(__always)
    public static func encode(worker: Int, index: Int, into record: UnsafeMutableRawBufferPointer, _ encoding: RecordEncoding) {
        switch encoding {
        case .binary: encode(worker: worker, index: index, into: record)
        case .text: encodeText(worker: worker, index: index, into: record)
        }
    }

    // MARK: Text

    /// The body's 64 characters (the order of base64's, none of them special to a log line).
    public static let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let hexDigits = Array("0123456789abcdef".utf8)
    /// Hex digits of the worker and of the index in a text header (4 + 12 = `headerSize`).
    static let textWorkerDigits = 4, textIndexDigits = 12

    /// Writes record (worker, index) as text into `record`. Allocates nothing.
    @inline(__always)
    public static func encodeText(worker: Int, index: Int, into record: UnsafeMutableRawBufferPointer) {
        let size = record.count
        guard let base = record.baseAddress?.assumingMemoryBound(to: UInt8.self), size >= headerSize else {
            encode(worker: worker, index: index, into: record)
            return
        }
        hexDigits.withUnsafeBufferPointer { hex in
            let w = UInt64(truncatingIfNeeded: worker), i = UInt64(truncatingIfNeeded: index)
            for k in 0..<textWorkerDigits { base[k] = hex[Int((w >> UInt64(4 * (textWorkerDigits - 1 - k))) & 15)] }
            for k in 0..<textIndexDigits {
                base[textWorkerDigits + k] = hex[Int((i >> UInt64(4 * (textIndexDigits - 1 - k))) & 15)]
            }
        }
        let word = bodyWord(worker: worker, index: index)
        base64Alphabet.withUnsafeBufferPointer { alphabet in
            for k in headerSize..<size { base[k] = alphabet[Int((word >> UInt64(8 * (k % 8))) & 63)] }
        }
    }

    /// The (worker, index) a text header spells, or nil when it is not 16 hex digits.
    @inline(__always)
    static func parseTextHeader(_ record: UnsafeRawPointer) -> (worker: UInt64, index: UInt64)? {
        var worker: UInt64 = 0, index: UInt64 = 0
        for k in 0..<headerSize {
            let c = record.load(fromByteOffset: k, as: UInt8.self)
            let digit: UInt8
            switch c {
            case 0x30...0x39: digit = c - 0x30
            case 0x61...0x66: digit = c - 0x61 + 10
            default: return nil
            }
            if k < textWorkerDigits { worker = worker << 4 | UInt64(digit) } else { index = index << 4 | UInt64(digit) }
        }
        return (worker, index)
    }
}

/// How records are spelt: the binary format, or its text form for services that take lines
/// (`RecordFormat`). A text record's output ends each with a newline (stride `size + 1`).
public enum RecordEncoding: String, Sendable {
    case binary, text
}

/// The splitmix64 generator: a seed, advanced by the golden gamma and finalised. Seeded runs
/// (fuzzing, chaos tests) replay exactly from their printed seed.
public struct SplitMix64: Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        defer { state &+= 0x9E37_79B9_7F4A_7C15 }
        return RecordFormat.splitmix64(state)
    }

    /// A value in 0..<n (n > 0).
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
