#if canImport(Glibc)
import Glibc
#endif

// Facts about the machine and the output's filesystem, recorded beside every result and
// used to decide what a run can do (free space, the dirty page limits).

/// Facts about the machine and the output directory, recorded beside every result.
public struct MachineFacts: Sendable {
    public var kernel: String
    public var filesystem: String
    public var cores: Int
    /// Free page reporting during the runs (`PageReporting`).
    public var pageReporting: PageReporting.State = .absent
    /// The block device under the output directory, whose writes each run counts; nil on
    /// tmpfs and other filesystems without one.
    public var device: BlockDevice?

    public static func probe(directory: String) -> MachineFacts {
        MachineFacts(
            kernel: readFirstLine("/proc/sys/kernel/osrelease") ?? "unknown",
            filesystem: filesystemType(of: directory) ?? "unknown",
            cores: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
            pageReporting: PageReporting.current,
            device: BlockDevice.holding(directory))
    }
}

/// Steal time: CPU time a VM's vCPUs were ready to run but the hypervisor ran something else,
/// summed over all CPUs (/proc/stat, in clock ticks of 10 ms here). A run with steal was
/// slowed by the host, not by what it measures.
enum StealClock {
    /// Nanoseconds of steal since boot, or nil where /proc/stat has no steal column.
    static func read() -> UInt64? {
        // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
        guard let line = readFirstLine("/proc/stat"), line.hasPrefix("cpu ") else { return nil }
        let fields = line.split(separator: " ")
        guard fields.count > 8, let ticks = UInt64(fields[8]) else { return nil }
        let perSecond = UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1))
        return ticks * (1_000_000_000 / perSecond)
    }
}

/// The kernel's dirty page cache limits (/proc/sys/vm), which decide when writers are made
/// to wait for writeback. A `*_bytes` setting, when non-zero, replaces its `*_ratio`.
public struct DirtyLimits: Sendable {
    public var ratio: Int, backgroundRatio: Int, bytes: Int, backgroundBytes: Int
    /// MemAvailable: the ratios are percentages of roughly this much memory.
    public var availableBytes: Int

    public static func read() -> DirtyLimits {
        func number(_ name: String) -> Int { readFirstLine("/proc/sys/vm/" + name).flatMap { Int($0) } ?? 0 }
        let available = readSmallFile("/proc/meminfo")?.split(separator: "\n")
            .first { $0.hasPrefix("MemAvailable:") }
            .flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) }.map { $0 * 1024 } ?? 0
        return DirtyLimits(ratio: number("dirty_ratio"), backgroundRatio: number("dirty_background_ratio"),
                           bytes: number("dirty_bytes"), backgroundBytes: number("dirty_background_bytes"),
                           availableBytes: available)
    }

    /// Dirty bytes at which writers are throttled (approximate when set as a ratio).
    public var throttleBytes: Int { bytes > 0 ? bytes : availableBytes / 100 * ratio }
    /// Dirty bytes at which background writeback starts.
    public var backgroundThresholdBytes: Int { backgroundBytes > 0 ? backgroundBytes : availableBytes / 100 * backgroundRatio }

    public var description: String {
        let hard = bytes > 0 ? "dirty_bytes \(bytes)" : "dirty_ratio \(ratio)% (~\(throttleBytes >> 20) MiB)"
        let soft = backgroundBytes > 0 ? "dirty_background_bytes \(backgroundBytes)"
            : "dirty_background_ratio \(backgroundRatio)% (~\(backgroundThresholdBytes >> 20) MiB)"
        return "\(soft), \(hard), of MemAvailable \(availableBytes >> 20) MiB"
    }
}

/// The filesystem type (ext4, tmpfs, ...) of the mount holding `path`, from /proc/self/mountinfo.
public func filesystemType(of path: String) -> String? {
    guard let real = realpath(path, nil) else { return nil }
    let resolved = String(cString: real)
    free(real)
    guard let mounts = readSmallFile("/proc/self/mountinfo") else { return nil }
    var best: (length: Int, type: String)?
    for line in mounts.split(separator: "\n") {
        // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
        let mountPoint = unescapeMountField(fields[4])
        let inside = mountPoint == "/" || resolved == mountPoint || resolved.hasPrefix(mountPoint + "/")
        if inside && mountPoint.count >= (best?.length ?? -1) {
            best = (mountPoint.count, String(fields[dash + 1]))
        }
    }
    return best?.type
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

/// Bytes available to an unprivileged writer in the filesystem holding `path`.
public func availableBytes(at path: String) -> Int? {
    var info = statvfs()
    guard statvfs(path, &info) == 0 else { return nil }
    return Int(info.f_bavail) * Int(info.f_frsize)
}
