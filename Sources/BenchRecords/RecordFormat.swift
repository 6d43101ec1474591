/// The record format every appendbench worker writes and every verifier checks.
///
/// Worker `w` (0-based) writes records `i = 0..<ops` of `size` bytes, little-endian:
/// - `size >= 16`: bytes 0-3 `UInt32(w)`, 4-7 `UInt32(size)`, 8-15 `UInt64(i)`, and byte `k`
///   for `16 <= k < size` is byte `k % 8` of `splitmix64((UInt64(w) << 32) | UInt64(i))`.
/// - `size < 16`: every byte is `0x41 + w % 26` (an ASCII capital letter).
///
/// A record occupies `stride` bytes in the file: `size`, or more when a backend pads
/// (O_DIRECT pads with zeros up to the filesystem's alignment).
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
    public static func record(worker: Int, index: Int, size: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: size)
        bytes.withUnsafeMutableBytes { encode(worker: worker, index: index, into: $0) }
        return bytes
    }
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
