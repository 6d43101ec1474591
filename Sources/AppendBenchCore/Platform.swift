#if canImport(Glibc)
import Glibc
#endif
import CBackends

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Writes `text` to stderr with one write(2) (no stdio buffer shared across fork).
public func writeStandardError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in
        var done = 0
        while done < bytes.count {
            let n = write(2, bytes.baseAddress! + done, bytes.count - done)
            if n <= 0 { if errno == EINTR { continue } else { return } }
            done += n
        }
    }
}

public var standardErrorIsTerminal: Bool { isatty(2) == 1 }

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

/// The first line of a small text file, or nil.
func readFirstLine(_ path: String) -> String? {
    guard let text = readSmallFile(path) else { return nil }
    return text.split(separator: "\n", maxSplits: 1).first.map(String.init)
}

func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes += buffer[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
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

/// Creates `path` and its missing parents; throws with the failing component and errno.
public func makeDirectories(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw BackendError.system("mkdir(\(current))")
        }
    }
    var st = stat()
    if stat(path, &st) != 0 || st.st_mode & S_IFMT != S_IFDIR {
        throw BackendError("\(path) is not a directory")
    }
}

/// Removes a file if it exists.
func removeFile(_ path: String) {
    _ = unlink(path)
}

/// The bytes `warmMemory` touches for a run whose output is `outputBytes`: twice the output
/// and 64 MiB (MMLog grows its file a chunk ahead, and a reporting pass between the warming
/// and the run can take some of the freshly freed blocks), at most half of the free memory.
/// Measured at 4095 B, 4 processes, 7 backends, 12 runs each: warming 1x the output + 8 MiB
/// left mmlog runs of 100-172 ms among 46-60 ms ones; 2x + 8 MiB, 1x + 256 MiB and 3x none
/// over 84 ms.
func warmMemoryBytes(outputBytes: Int) -> Int {
    max(0, min(2 * outputBytes + 64 << 20, freeMemoryBytes() / 2))
}

private func freeMemoryBytes() -> Int {
    sysconf(Int32(_SC_AVPHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE))
}

/// The pool `Benchmark` warms once, before the runs, when free page reporting is held off: 1 GiB,
/// or 4 times the largest run's output, at most half of the free memory. Holding reporting
/// keeps memory warm only once it has been touched; what the host took before stays cold, and
/// the per-run warming alone leaves some of it in reach of the runs. Measured (4095 B, 1 process,
/// all backends, 10 runs, memory left 45 s to go cold first, reporting held): without the pool
/// 5 slow mmlog runs in 40 (49-221 ms against 19-35), with 1 GiB none in 30 (19-29 ms).
func warmPoolBytes(outputBytes: Int) -> Int {
    max(0, min(max(1 << 30, 4 * outputBytes), freeMemoryBytes() / 2))
}

/// Touches and releases `bytes` of memory in 2 MiB pages (`cb_warm_memory`) so that the
/// next run draws on memory the hypervisor already backs. A VM that reports free memory to
/// its host (free page reporting) lets the host discard it, and the first touch of each
/// discarded page then costs a fault in the host: here about 3 ms per 2 MiB. Allocations of
/// 2 MiB folios (MMLog's chunks) draw on such memory; 4 KiB page-cache pages (write())
/// mostly come from fragments the host never took. Without this step a run's time depends
/// on how long ago the previous run freed its memory. On bare metal it changes nothing.
/// A failure (no memory to map) is said on stderr; the run goes on unwarmed.
func warmMemory(bytes: Int) {
    if cb_warm_memory(bytes) != 0 {
        writeStandardError("appendbench: could not warm \(bytes) bytes of memory before a run: "
                           + "\(String(cString: strerror(errno))); this run draws on memory as it is\n")
    }
}

/// Free page reporting: a VM's kernel handing blocks of free memory (2^order pages and up) to
/// its host, which discards them; the guest's next touch of such a page faults in the host
/// (here about 3 ms per 2 MiB). A reporting pass takes the most recently freed blocks first,
/// so a pass between `warmMemory` and a run, or during it, hands the run cold memory.
/// Holding it off (root) for an invocation makes runs see memory as on bare metal.
public enum PageReporting {
    static let parameter = "/sys/module/page_reporting/parameters/page_reporting_order"

    /// What reporting was doing during the runs, for the report and the CSV.
    public enum State: String, Sendable {
        /// The kernel has no free page reporting (bare metal, or no balloon device).
        case absent
        /// Reporting ran (the report says so, and how to hold it).
        case on
        /// The order was already past the largest block, so nothing was reported.
        case off
        /// This invocation held it off and put the order back afterwards.
        case held
    }

    /// The reporting order, or nil without free page reporting.
    static var order: Int? { readFirstLine(parameter).flatMap { Int($0) } }

    /// The largest block order the allocator has (columns of /proc/buddyinfo, less one).
    static var largestOrder: Int {
        let columns = readFirstLine("/proc/buddyinfo")?.split(separator: " ").dropFirst(4).count ?? 11
        return max(columns - 1, 0)
    }

    public static var current: State {
        guard let order else { return .absent }
        return order > largestOrder ? .off : .on
    }

    /// Sets the order past the largest block, so no block is reported, until `release()`,
    /// exit or a fatal signal puts the order back. Returns the state the runs will see; when
    /// holding fails (not root, the kernel refuses the order) says why on stderr.
    static func hold() -> State {
        guard let order else { return .absent }
        let off = largestOrder + 1
        if order >= off { return .off }
        if cb_hold_parameter(parameter, "\(off)", "\(order)") != 0 {
            writeStandardError("appendbench: could not hold free page reporting off (writing \(off) to \(parameter): "
                               + "\(String(cString: strerror(errno)))); the runs go on with it\n")
            return .on
        }
        if Self.order != off {
            release()
            writeStandardError("appendbench: the kernel did not take page_reporting_order \(off); the runs go on with reporting\n")
            return .on
        }
        return .held
    }

    /// Puts back the order `hold()` changed. Idempotent.
    static func release() { cb_release_parameter() }
}

/// Lets the filesystem holding `directory` finish what earlier runs left it (the journal
/// commit that frees and discards a deleted output's blocks, dirty pages of kept outputs):
/// `syncfs`. Run before each measurement so one run's cleanup is not timed in the next.
func settleFilesystem(_ directory: String) {
    let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    _ = cb_syncfs(fd)
    close(fd)
}
