#if canImport(Glibc)
import Glibc
#endif

/// A small text file (/proc, /sys), or nil when it cannot be read.
public func readSmallFile(_ path: String) -> String? {
    readFileBytes(path).map { String(decoding: $0, as: UTF8.self) }
}

/// A whole (small) file's bytes, or nil when it cannot be read.
/// The corresponding C functions are `open` and `read`.
public func readFileBytes(_ path: String) -> [UInt8]? {
    let fd = Int32(retryingInterrupts { Int(open(path, O_RDONLY | O_CLOEXEC)) })
    if fd < 0 { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { chunk in retryingInterrupts { read(fd, chunk.baseAddress, chunk.count) } }
        if n < 0 { return nil }
        if n == 0 { return bytes }
        bytes += buffer[0..<n]
    }
}

/// The first line of a small text file, or nil.
public func readFirstLine(_ path: String) -> String? {
    guard let text = readSmallFile(path) else { return nil }
    return text.split(separator: "\n", maxSplits: 1).first.map(String.init)
}

/// The running kernel's release (`uname -r`).
public func kernelRelease() -> String {
    readFirstLine("/proc/sys/kernel/osrelease") ?? "unknown"
}

/// Processors online.
public func onlineCores() -> Int {
    Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
}

/// The filesystem type (ext4, tmpfs, ...) of the mount holding `path`, from /proc/self/mountinfo.
public func filesystemType(of path: String) -> String? {
    mountEntry(of: path)?.type
}

/// The mount holding `path`: the entry of /proc/self/mountinfo whose mount point is the longest
/// prefix of its real path; its filesystem type and source (/dev/vda, tmpfs, ...).
public func mountEntry(of path: String) -> (type: String, source: String)? {
    guard let real = realpath(path, nil) else { return nil }
    let resolved = String(cString: real)
    free(real)
    guard let mounts = readSmallFile("/proc/self/mountinfo") else { return nil }
    var best: (length: Int, type: String, source: String)?
    for line in mounts.split(separator: "\n") {
        // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { continue }
        let mountPoint = unescapeMountField(fields[4])
        let inside = mountPoint == "/" || resolved == mountPoint || resolved.hasPrefix(mountPoint + "/")
        if inside && mountPoint.count >= (best?.length ?? -1) {
            best = (mountPoint.count, String(fields[dash + 1]), unescapeMountField(fields[dash + 2]))
        }
    }
    return best.map { ($0.type, $0.source) }
}

/// mountinfo escapes spaces and such as \040.
private func unescapeMountField(_ field: Substring) -> String {
    guard field.contains("\\") else { return String(field) }
    var bytes: [UInt8] = []
    var chars = Array(field.utf8)[...]
    while let c = chars.popFirst() {
        if c == UInt8(ascii: "\\"), chars.count >= 3, let value = UInt8(String(decoding: chars.prefix(3), as: UTF8.self), radix: 8) {
            bytes.append(value)
            chars = chars.dropFirst(3)
        } else {
            bytes.append(c)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// The two lines a benchmark prints above its table, so that its output can be filed in
/// results/ as it is: the command line, then the date, kernel, filesystem of `directory` and
/// cores.
public func provenanceLines(directory: String) -> [String] {
    ["command: \(CommandLine.arguments.joined(separator: " "))",
     "date: \(utcTimestamp()), kernel \(kernelRelease()), \(filesystemType(of: directory) ?? "unknown") (\(directory)), "
        + "\(onlineCores()) cores"]
}
