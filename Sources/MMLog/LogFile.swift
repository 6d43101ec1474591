#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CMMLogShims
import Synchronization

/// One data file and its metadata, as one handle sees them: descriptors, the mapped metadata,
/// this handle's chunk ring and prefetcher, and the process-local locks. A handle has one per
/// file it has appended to (a rotation adds one); all but the newest are fenced off.
final class LogFile: @unchecked Sendable {
    // @unchecked: mutable state is behind `growLock`, `pool` or atomics; the rest is immutable.

    let path: String
    let metadataPath: String
    let dataFD: Int32
    let metadataFD: Int32
    /// This log's OFD locks (in its lock file).
    let locks: Locks
    let header: Metadata
    let cursor: UnsafeAtomic<UInt64>
    let fileSize: UnsafeAtomic<UInt64>
    let chunkSize: Int
    let chunkShift: Int
    let chunkMask: Int
    let ring: ChunkRing
    let options: MMLog.Options
    /// What opening found and repaired, when this handle recovered the log.
    let recovery: RecoveryReport?
    /// This handle's entry in the metadata's handle table, if it found a free one.
    let handleEntry: Int?
    /// Whether `open` finished a rotation before it got this file (set once, by `open`).
    var openedAfterRotation = false
    /// Unique among every file object of this process.
    let id: UInt64
    /// Serialises growing, voiding, recording holes and trimming among this handle's threads
    /// (OFD locks do not: they belong to the open file description, which all threads share).
    let growLock = Mutex<Void>(())
    /// What this handle saw when it last mapped a chunk (`PageStrategy`).
    let pageSample = Mutex<PageSample>(PageSample())
    /// Serialises this handle's threads on the overflow slot (its OFD lock does not).
    let overflow = Mutex<Void>(())
    /// Serialises this handle's threads in a rotation (its OFD lock does not).
    let rotateLock = Mutex<Void>(())
    /// Serialises the flusher role of a group commit among this handle's threads.
    let flushLock = Mutex<Void>(())
    /// The hole table's (count, reach) when this handle's flusher last flushed the metadata
    /// (under `flushLock`).
    var metadataFlushedHoles: (UInt64, UInt64) = (0, 0)
    /// The writer slots this handle owns (it holds their lock bytes) and which are unused.
    let pool = Mutex<SlotPool>(SlotPool())
    /// Threads inside an operation that uses the descriptors without a reservation (sync,
    /// trim, claiming a slot, the prefetcher): close waits for them.
    let slowPaths = UnsafeAtomic<Int>.create(0)
    private(set) var prefetcher: Prefetcher?
    /// True once close or a rotation fenced this file off (its header then maps zeros).
    let fenced = UnsafeAtomic<Bool>.create(false)
    /// True while a trim of this handle has the cursor sealed: the only time a sealed cursor
    /// is legitimate while this handle is attached (a trim runs only with no other attached).
    let trimming = UnsafeAtomic<Bool>.create(false)
    /// Set by the first `detach` of this file (the only one that runs).
    let detaching = UnsafeAtomic<Bool>.create(false)

    private static let nextID = Atomic<UInt64>(1)

    init(path: String, metadataPath: String, dataFD: Int32, metadataFD: Int32, locks: Locks, header: Metadata,
         options: MMLog.Options, recovery: RecoveryReport?, handleEntry: Int?) {
        self.path = path
        self.metadataPath = metadataPath
        self.dataFD = dataFD
        self.metadataFD = metadataFD
        self.locks = locks
        self.header = header
        self.cursor = header.cursor
        self.fileSize = header.fileSize
        self.chunkSize = Int(header.chunkSize)
        self.chunkShift = chunkSize.trailingZeroBitCount
        self.chunkMask = chunkSize - 1
        self.ring = ChunkRing(maxChunks: options.maxChunks, chunkSize: chunkSize)
        self.options = options
        self.recovery = recovery
        self.handleEntry = handleEntry
        self.id = Self.nextID.add(1, ordering: .relaxed).oldValue
        if options.prefetch && (options.prefault != .none || options.adaptivePages) {
            prefetcher = makePrefetcher()
        }
    }

    /// Frees what only the object holds, after close fenced the file off. Called from the
    /// handle's deinit, when no thread can reach this file any more.
    func release() {
        Sys.unmap(header.base, MetadataLayout.metadataSize)
        slowPaths.destroy()
        fenced.destroy()
        trimming.destroy()
        detaching.destroy()
    }

    // MARK: Locks

    /// Runs `body` holding the grow lock: this handle's mutex, then the OFD lock on the
    /// metadata's grow byte (the kernel releases it if we die inside).
    func withGrowLock<T>(_ body: () throws(MMLogError) -> T) throws(MMLogError) -> T {
        try growLock.withLock { (_: inout Void) throws(MMLogError) -> T in
            try locks.take(MetadataLayout.growLockByte, F_WRLCK, wait: true, "grow")
            defer { locks.release(MetadataLayout.growLockByte) }
            return try body()
        }
    }

    /// Counts this thread into the slow paths unless `closed`. Sequentially consistent with
    /// close: either close sees our count or we see its flag.
    func enterSlowPath(_ operation: String, closed: UnsafeAtomic<Bool>) throws(MMLogError) {
        slowPaths.wrappingIncrement(ordering: .sequentiallyConsistent)
        if closed.load(ordering: .sequentiallyConsistent) || fenced.load(ordering: .sequentiallyConsistent) {
            slowPaths.wrappingDecrement(ordering: .releasing)
            throw closedError(operation)
        }
    }

    func leaveSlowPath() {
        slowPaths.wrappingDecrement(ordering: .releasing)
    }

    func closedError(_ operation: String) -> MMLogError {
        MMLogError(kind: .closed, operation: "\(operation)(\(path))", detail: "the log is closed")
    }

    // MARK: Chunks

    /// Starts the thread behind `Options.prefetch`. Its work counts as a slow path, so close
    /// waits for a prefault in progress; it maps only chunks already allocated, so it never
    /// grows the file or writes a byte.
    private func makePrefetcher() -> Prefetcher? {
        // unowned: the handle stops the thread (close) before it lets this file go (deinit).
        Prefetcher { [unowned self] k in
            slowPaths.wrappingIncrement(ordering: .sequentiallyConsistent)
            defer { slowPaths.wrappingDecrement(ordering: .releasing) }
            if fenced.load(ordering: .sequentiallyConsistent) { return }
            let start = k * chunkSize
            guard start + chunkSize <= Int(clamping: fileSize.load(ordering: .acquiring)) else { return }
            let pages = pageMode(sampling: false)  // the mode the appenders' last chunk got
            guard let base = try? Sys.mapShared(dataFD, chunkSize, start, path, hugePages: pages.hugePages) else { return }
            // Never SIGBUS: if a trim cut the file meanwhile, the populate fails with EFAULT.
            Sys.prefault(base, chunkSize, pages.prefault)
            Sys.unmap(base, chunkSize)
        }
    }

    /// Maps chunk `k` (and its neighbour when a record straddles), with the page mode the
    /// strategy picks now, and asks the prefetcher for the one after.
    func map(chunks range: ClosedRange<Int>, prefetchNext: Bool = true) throws(MMLogError) -> Bool {
        let allocated = Int(clamping: fileSize.load(ordering: .acquiring))
        // The header's allocated size is never above the file's (growth allocates, then
        // publishes; a trim of this handle cuts, then publishes): a larger one was changed
        // under the writers, and a store into a page past the end of the file is a SIGBUS.
        // One fstat per chunk mapped (a slow path).
        let actual = try Sys.size(dataFD, path)
        if allocated > actual && !trimming.load(ordering: .sequentiallyConsistent)
            && Int(clamping: fileSize.load(ordering: .acquiring)) > actual {
            throw MMLogError(kind: .corruptMetadata, operation: "append(\(path))",
                             detail: "\(metadataPath) says \(allocated) bytes are allocated, the file has \(actual): the header was changed under the writers")
        }
        let pages = pageMode()
        var mappedAll = true
        for k in range where try ring.load(k, fd: dataFD, path: path, allocatedEnd: allocated, pages: pages) == .busy {
            mappedAll = false
        }
        if prefetchNext { prefetcher?.request(range.upperBound + 1) }
        return mappedAll
    }

    /// Allocates and maps (and prefaults) the chunk the next append goes to, so that the
    /// first append does not pay for it. Best effort: a failure here (a full disk) shows
    /// again, as an error, at that append. It does not ask the prefetcher for the chunk after:
    /// how to fault that one in depends on how fast this one fills (`PageStrategy`).
    func prepareNextChunk() {
        let next = Cursor.offset(cursor.load(ordering: .relaxed))
        do throws(MMLogError) {
            if next + 1 > fileSize.load(ordering: .acquiring) {
                var unused: UInt64 = 0
                _ = try grow(start: next, end: next + 1, gen: 0, probe: true, idle: &unused)
            }
            let k = Int(next >> UInt64(chunkShift))
            _ = try map(chunks: k...k, prefetchNext: !options.adaptivePages)
        } catch {}
    }

    func stopPrefetcher() {
        prefetcher?.stop()
    }
}
