#if canImport(Glibc)
import Glibc
#endif
import ToolSupport

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
            kernel: kernelRelease(),
            filesystem: filesystemType(of: directory) ?? "unknown",
            cores: onlineCores(),
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

/// Bytes available to an unprivileged writer in the filesystem holding `path`.
public func availableBytes(at path: String) -> Int? {
    var info = statvfs()
    guard statvfs(path, &info) == 0 else { return nil }
    return Int(info.f_bavail) * Int(info.f_frsize)
}
