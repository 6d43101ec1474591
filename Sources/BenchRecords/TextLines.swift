/// Text records for the tests of readers: line `i` of worker `w`, `size` bytes, every byte
/// printable except the final newline: `w<w> r<i> xxxx...\n`. A torn line, a NUL byte or a
/// line seen twice shows at once.
public enum TextLines {
    /// The shortest line: room for the prefix of any worker and index.
    public static let minimumSize = 24

    /// Writes line (worker, index) into `record` (its count is the line's size, at least
    /// `minimumSize`).
    public static func encode(worker: Int, index: Int, into record: UnsafeMutableRawBufferPointer) {
        let prefix = Array("w\(worker) r\(index) ".utf8)
        let size = record.count
        for k in 0..<size {
            record[k] = k < prefix.count ? prefix[k] : (k == size - 1 ? 0x0A : 0x78)
        }
    }

    /// Line (worker, index) of `size` bytes as a new array; for tests and tools, not hot paths.
    public static func line(worker: Int, index: Int, size: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: size)
        bytes.withUnsafeMutableBytes { encode(worker: worker, index: index, into: $0) }
        return bytes
    }

    /// The (worker, index) of a line (without its newline), or nil when it is not one whole
    /// line of this format and `size` (counting the newline; 0: any size).
    public static func parse(_ line: Substring.UTF8View, size: Int) -> (worker: Int, index: Int)? {
        guard size == 0 || line.count == size - 1, line.first == UInt8(ascii: "w") else { return nil }
        let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, fields[1].first == UInt8(ascii: "r"),
              let worker = Int(String(decoding: fields[0].dropFirst(), as: UTF8.self)),
              let index = Int(String(decoding: fields[1].dropFirst(), as: UTF8.self)),
              fields[2].allSatisfy({ $0 == 0x78 })
        else { return nil }
        return (worker, index)
    }

    /// What a reader got, checked against what writers wrote.
    public struct Check: CustomStringConvertible {
        /// Lines per worker, in order.
        public var perWorker: [Int: [Int]] = [:]
        public var malformed: [String] = []
        public var nulBytes = 0

        public var description: String {
            let counts = perWorker.keys.sorted().map { "w\($0): \(perWorker[$0]!.count)" }.joined(separator: ", ")
            return "\(counts); \(malformed.count) malformed line(s)\(malformed.prefix(3).map { " [\($0)]" }.joined()); \(nulBytes) NUL byte(s)"
        }

        /// Whether worker `w` has exactly lines 0..<count, each once, in order.
        public func hasExactly(worker: Int, count: Int) -> Bool {
            (perWorker[worker] ?? []) == Array(0..<count)
        }

        /// What is wrong with worker `w`'s lines against exactly 0..<count, in words: missing
        /// and repeated indices (the first few) and lines out of order ("" when none).
        public func problems(worker: Int, count: Int) -> String {
            let seen = perWorker[worker] ?? []
            var times = [Int](repeating: 0, count: count)
            var outOfRange = 0
            for i in seen { if i >= 0 && i < count { times[i] += 1 } else { outOfRange += 1 } }
            let missing = times.indices.filter { times[$0] == 0 }, repeated = times.indices.filter { times[$0] > 1 }
            let disorder = zip(seen, seen.dropFirst()).filter { $0.0 >= $0.1 }.count
            var parts: [String] = []
            if !missing.isEmpty { parts.append("w\(worker) missing \(missing.count): \(missing.prefix(8))") }
            if !repeated.isEmpty { parts.append("w\(worker) repeated \(repeated.count): \(repeated.prefix(8))") }
            if outOfRange > 0 { parts.append("w\(worker): \(outOfRange) index(es) past \(count)") }
            if disorder > 0 && missing.isEmpty && repeated.isEmpty { parts.append("w\(worker): \(disorder) line(s) out of order") }
            return parts.joined(separator: "; ")
        }

        /// Whether worker `w` has lines 0..<n for some n <= count, in order, each once (a killed
        /// writer: its line in flight, if any, is a hole, and it wrote nothing after it).
        public func hasPrefix(worker: Int, atMost count: Int) -> Bool {
            let seen = perWorker[worker] ?? []
            return seen.count <= count && seen == Array(0..<seen.count)
        }
    }

    /// Splits `text` into lines of `size` bytes (0: any size) and checks each one.
    public static func check(_ bytes: [UInt8], size: Int) -> Check {
        var check = Check()
        check.nulBytes = bytes.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }
        let text = String(decoding: bytes, as: UTF8.self)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            if let (worker, index) = parse(line.utf8, size: size) {
                check.perWorker[worker, default: []].append(index)
            } else {
                check.malformed.append(String(line.prefix(60)))
            }
        }
        if let last = text.split(separator: "\n", omittingEmptySubsequences: false).last, !last.isEmpty {
            check.malformed.append("unterminated: " + String(last.prefix(60)))
        }
        return check
    }
}
