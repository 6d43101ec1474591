#if canImport(Glibc)
import Glibc
#endif
import Atomics
import Synchronization

/// How a chunk's pages are put in place when a handle maps it.
struct PageMode: Equatable, CustomStringConvertible {
    var hugePages: Bool
    var prefault: MMLog.Prefault

    var description: String { "\(hugePages ? "2 MiB folios" : "4 KiB pages"), prefault \(prefault)" }
}

/// Chooses how the next chunk's pages are put in place (`Options.adaptivePages`).
///
/// Burst mode (the options' `hugePages` and `prefault`, by default 2 MiB folios prefaulted
/// for writing) makes a chunk's page cache in a few large steps, so appends take no fault: it
/// is what makes bursts fast. But it dirties a whole chunk at once, and a 2 MiB folio that
/// writeback has cleaned is dirtied whole again by the next store, so a log filled slowly
/// (over more than the kernel's dirty expiry, 30 s by default) or synced often writes its
/// chunks to the device again and again, zeros included. Steady mode (4 KiB pages, populated
/// for reading by the prefetch thread, so only the pages a store touches become dirty) writes
/// about what is appended.
///
/// The rule: a chunk is mapped in burst mode while the log fills a chunk in less than half the
/// dirty expiry (so every folio is complete before writeback first looks at it) and no
/// `sync()` has been called since the last chunk was mapped; otherwise in steady mode. The
/// fill rate comes from the cursor: each handle samples (cursor, time) when it maps a chunk.
/// Before the first sample (the first chunk or two of a handle) it is steady mode.
///
/// On btrfs burst mode is steady mode: 2 MiB folios and write-prefaulting lose to write()
/// there (4 processes, 4095 B: 1.38-1.54x write() with 4 KiB pages prefaulted for reading,
/// 0.72-0.73x with burst mode; results/speed22.md). On tmpfs there is no device to write
/// zeros to and growth (fallocate) already allocates the pages: both modes are 4 KiB pages
/// faulted at the first store, without prefaulting (prefaulting there maps every page twice,
/// once on the prefetcher's mapping, and 4095 B appends ran at 0.40-0.47x write() against
/// 0.72-0.94x without). The filesystem is read once per file, with fstatfs.
/// `adaptivePages: false` keeps the options' pages on every filesystem.
enum PageStrategy {
    /// statfs.f_type of btrfs and tmpfs (linux/magic.h BTRFS_SUPER_MAGIC, TMPFS_MAGIC).
    static let btrfsMagic: UInt64 = 0x9123_683E
    static let tmpfsMagic: UInt64 = 0x0102_1994

    /// Burst and steady mode for a file on the filesystem `magic` (nil: unknown) with `options`.
    static func modes(_ options: MMLog.Options, filesystem magic: UInt64?) -> (burst: PageMode, steady: PageMode) {
        switch magic {
        case btrfsMagic: return (steady, steady)
        case tmpfsMagic:
            let faulted = PageMode(hugePages: false, prefault: .none)
            return (faulted, faulted)
        default: return (PageMode(hugePages: options.hugePages, prefault: options.prefault), steady)
        }
    }

    /// Half the kernel's dirty expiry (vm.dirty_expire_centisecs), read once.
    static let burstWindowNanoseconds: UInt64 = {
        let fd = open("/proc/sys/vm/dirty_expire_centisecs", O_RDONLY | O_CLOEXEC)
        var centiseconds: UInt64 = 3000
        if fd >= 0 {
            var text = [UInt8](repeating: 0, count: 32)
            let n = text.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            close(fd)
            if n > 0, let value = UInt64(String(decoding: text.prefix(n).filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self)) {
                centiseconds = value
            }
        }
        return max(centiseconds, 1) * 10_000_000 / 2
    }()

    static let steady = PageMode(hugePages: false, prefault: .read)

    /// Time to fill one chunk at the rate of `appended` bytes in `elapsed` ns, saturating at
    /// UInt64.max: the product overflows 64 bits once 2^64 / chunkSize ns have passed between
    /// two samples (2 h 27 min at 2 MiB), which a log written slowly reaches every day.
    static func chunkFillNanoseconds(elapsed: UInt64, appended: UInt64, chunkSize: UInt64) -> UInt64 {
        guard appended > 0 else { return .max }
        let product = elapsed.multipliedFullWidth(by: chunkSize)
        guard product.high < appended else { return .max }
        return appended.dividingFullWidth(product).quotient
    }
}

/// What a handle saw when it last mapped a chunk: the cursor, the time, the sync count.
struct PageSample {
    var cursor: UInt64 = 0
    var nanoseconds: UInt64 = 0
    var syncCalls: UInt64 = 0
    var mode: PageMode?
    /// Burst and steady mode on this file's filesystem (`PageStrategy.modes`), found at the
    /// first sample.
    var modes: (burst: PageMode, steady: PageMode)?
}

extension LogFile {
    /// The mode for the chunk about to be mapped (see `PageStrategy`). `sampling`: take a new
    /// sample (an appender mapping a chunk); without, the last decision (the prefetcher).
    func pageMode(sampling: Bool = true) -> PageMode {
        guard options.adaptivePages else { return PageMode(hugePages: options.hugePages, prefault: options.prefault) }
        guard sampling else { return pageSample.withLock { $0.mode ?? $0.modes?.steady } ?? PageStrategy.steady }
        let cursorNow = Cursor.offset(cursor.load(ordering: .relaxed))
        let now = Sys.monotonicNanoseconds()
        let syncs = header.syncCalls.load(ordering: .relaxed)
        return pageSample.withLock { sample in
            let modes = sample.modes ?? PageStrategy.modes(options, filesystem: Sys.filesystemMagic(dataFD))
            sample.modes = modes
            defer {
                if cursorNow > sample.cursor || sample.nanoseconds == 0 {
                    sample.cursor = cursorNow
                    sample.nanoseconds = now
                    sample.syncCalls = syncs
                }
            }
            guard sample.nanoseconds != 0, cursorNow > sample.cursor, now > sample.nanoseconds else {
                return sample.mode ?? modes.steady
            }
            let perChunk = PageStrategy.chunkFillNanoseconds(elapsed: now - sample.nanoseconds, appended: cursorNow - sample.cursor,
                                                             chunkSize: UInt64(chunkSize))
            let mode = perChunk < PageStrategy.burstWindowNanoseconds && syncs == sample.syncCalls ? modes.burst : modes.steady
            sample.mode = mode
            return mode
        }
    }

}
