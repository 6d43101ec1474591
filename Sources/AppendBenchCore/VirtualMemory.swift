#if canImport(Glibc)
import Glibc
#endif
import CBackends
import ToolSupport

// The memory a run draws on, in a VM that hands free memory back to its host: warming it
// before each run, and holding the host's free page reporting off for an invocation
// (README, "Memory on a VM").

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
        writeStandardError("appendbench: could not warm memory before a run "
                           + "(\(HarnessError.system("cb_warm_memory(\(bytes))"))); this run draws on memory as it is\n")
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
            writeStandardError("appendbench: could not hold free page reporting off "
                               + "(\(HarnessError.system("writing \(off) to \(parameter)"))); the runs go on with it\n")
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
