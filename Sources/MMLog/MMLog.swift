#if canImport(Glibc)
import Glibc
#endif
import Atomics
import Synchronization

/// A log file that many processes and threads append to at once.
///
/// The data file at `path` holds exactly the appended bytes, in reservation order. Beside it,
/// `<path>.mmlog` holds the shared cursor (see `MetadataLayout`). An append reserves its byte
/// range with one atomic fetch-add on the cursor and copies the record into a shared mapping
/// of the data file; no lock, allocation or system call is on that path while the range lies
/// in a chunk this process has mapped.
///
/// One `MMLog` may be shared by all threads of a process. Do not carry a handle across
/// `fork()`: open one in the child instead.
public final class MMLog: @unchecked Sendable {
    // @unchecked: the mutable state is either atomic (shared header, `closedFlag`,
    // `slowPaths`), behind a Mutex (`growLock`, the ring's mapping lock), or immutable.

    public struct Options: Sendable {
        /// Bytes mapped at a time and the step the data file grows by. A power of two and a
        /// multiple of the page size. When the log exists, its recorded chunk size wins.
        public var chunkSize: Int
        /// Most chunks one handle keeps mapped (rounded down to a power of two, at least 2).
        /// Bounds the handle's mapped memory to `maxChunks * chunkSize`.
        public var maxChunks: Int
        /// Permissions of files this handle creates (before the umask).
        public var permissions: mode_t
        /// How a freshly mapped chunk is prefaulted (the part of it the file has allocated).
        public var prefault: Prefault
        /// Map chunks at 2 MiB-aligned addresses with MADV_HUGEPAGE, so the page cache can
        /// back them with 2 MiB folios, each allocated and mapped at once. Only advice: where
        /// the kernel or filesystem has no such folios, nothing changes.
        public var hugePages: Bool
        /// Prefault the next chunk on a helper thread (one per handle) as soon as a chunk is
        /// mapped, so page allocation overlaps appends. It maps one chunk more, briefly.
        public var prefetch: Bool

        public static let defaultChunkSize = 4 << 20  // see the README: scripts/sweep_mmlog.sh
        public static let defaultMaxChunks = 4

        public init(chunkSize: Int = Options.defaultChunkSize, maxChunks: Int = Options.defaultMaxChunks,
                    permissions: mode_t = 0o644, prefault: Prefault = .write, hugePages: Bool = true,
                    prefetch: Bool = true) {
            self.prefetch = prefetch
            self.chunkSize = chunkSize
            self.maxChunks = maxChunks
            self.permissions = permissions
            self.prefault = prefault
            self.hugePages = hugePages
        }
    }

    /// How a chunk's pages are faulted in when this handle maps it.
    public enum Prefault: String, Sendable, CaseIterable {
        /// MADV_POPULATE_WRITE: allocated and mapped writable up front, so appends take no
        /// faults. Dirties the whole chunk at once, so `sync()` also writes its zeros.
        case write
        /// MADV_POPULATE_READ: allocated and mapped read-only; each page (or 2 MiB folio)
        /// takes a write fault at its first append, and is dirtied only then.
        case read
        /// Nothing: each page is allocated at its first append.
        case none
    }

    /// Records of at least this many bytes are written with one pwrite rather than copied
    /// through a mapping. Measured (1 and 4 processes, 3 invocations of 3 runs, each
    /// against write() in the same invocation, page reporting held): through the mapping
    /// 8 KiB 2.18-2.27x write() against pwrite's 1.09-1.14x, 16 KiB 1.52-1.57x against
    /// 1.12-1.27x, 32 KiB 1.26-1.38x either way, 64 KiB 1.07-1.24x against 1.33-1.48x.
    static let pwriteThreshold = 32768

    /// Path of the data file.
    public let path: String
    /// Path of the metadata file (`path + ".mmlog"`).
    public let metadataPath: String
    /// Chunk size in force (the log's own, which may differ from the options when it existed).
    public let chunkSize: Int

    private let dataFD: Int32
    private let metadataFD: Int32
    private let header: Metadata
    private let cursor: UnsafeAtomic<UInt64>
    private let fileSize: UnsafeAtomic<UInt64>
    private let chunkShift: Int
    private let chunkMask: Int
    private let ring: ChunkRing
    // UnsafeAtomic rather than ManagedAtomic: the latter's storage is reached through a
    // call the optimiser left in the fast path (callgrind: 5 of 115 instructions per append,
    // plus an indirect call). Destroyed in deinit.
    private let closedFlag = UnsafeAtomic<Bool>.create(false)
    /// Appends inside a slow path (grow, map, pwrite, trim), which use the file descriptors.
    private let slowPaths = UnsafeAtomic<Int>.create(0)
    /// Serialises growing and trimming among this handle's threads (OFD locks do not: they
    /// belong to the open file description, which all threads share).
    private let growLock = Mutex<Void>(())
    /// Prefaults the next chunk ahead of the appends (`Options.prefetch`); nil without it.
    private let prefetcher: Prefetcher?

    /// Opens the log at `path`, creating the data and metadata files if needed.
    ///
    /// Any number of processes may open the same new path at once: exactly one creates the
    /// metadata and the others wait for it (on a lock the kernel releases if it dies). An
    /// existing data file without metadata is kept: appends go after its current end.
    public init(path: String, options: Options = Options()) throws(MMLogError) {
        let page = Sys.pageSize
        guard options.chunkSize > 0, options.chunkSize % page == 0, options.chunkSize & (options.chunkSize - 1) == 0,
              options.chunkSize <= 1 << 40
        else {
            throw MMLogError(kind: .invalidOptions, operation: "MMLog(\(path))",
                             detail: "chunk size \(options.chunkSize) must be a power of two and a multiple of the page size (\(page))")
        }
        guard options.maxChunks >= 2 else {
            throw MMLogError(kind: .invalidOptions, operation: "MMLog(\(path))",
                             detail: "maxChunks \(options.maxChunks) must be at least 2 (a record may straddle two chunks)")
        }
        let metadataPath = path + ".mmlog"

        let metaFD = try Sys.open(metadataPath, O_RDWR | O_CREAT, options.permissions)
        var dataFD: Int32 = -1
        var mapped: UnsafeMutableRawPointer?
        do throws(MMLogError) {
            _ = try Sys.lockByte(metaFD, MetadataLayout.initLockByte, F_WRLCK, wait: true, "\(metadataPath) init")
            defer { _ = try? Sys.lockByte(metaFD, MetadataLayout.initLockByte, F_UNLCK, wait: true, "\(metadataPath) init") }

            let metaSize = try Sys.size(metaFD, metadataPath)
            if metaSize == 0 {
                try Sys.ftruncate(metaFD, MetadataLayout.headerSize, metadataPath)
            } else if metaSize < MetadataLayout.headerSize {
                throw MMLogError(kind: .corruptMetadata, operation: "MMLog(\(path))",
                                 detail: "\(metadataPath) is \(metaSize) bytes; a header is \(MetadataLayout.headerSize)")
            }
            let base = try Sys.mapShared(metaFD, MetadataLayout.headerSize, 0, metadataPath)
            mapped = base
            let meta = Metadata.bind(base)

            let state = meta.state.load(ordering: .acquiring)  // pairs with the creator's releasing store
            if state != MetadataLayout.ready {
                // Zero state with a zero or valid magic is a creation that never finished (its
                // creator died holding the init lock): create again. Anything else is not ours.
                guard state == 0, meta.magic == 0 || meta.magic == MetadataLayout.magic else {
                    throw MMLogError(kind: .corruptMetadata, operation: "MMLog(\(path))",
                                     detail: "\(metadataPath) is not an MMLog header (state 0x\(String(state, radix: 16)))")
                }
                dataFD = try Sys.open(path, O_RDWR | O_CREAT, options.permissions)
                let existing = try Sys.size(dataFD, path)
                meta.initialize(pageSize: page, chunkSize: options.chunkSize, dataSize: existing)
                meta.state.store(MetadataLayout.ready, ordering: .releasing)  // pairs with the acquiring load above
            } else {
                if let (kind, why) = meta.problem(pageSize: page) {
                    throw MMLogError(kind: kind, operation: "MMLog(\(path))", detail: "\(metadataPath): \(why)")
                }
                do throws(MMLogError) {
                    dataFD = try Sys.open(path, O_RDWR)
                } catch where error.errno == ENOENT {
                    throw MMLogError(kind: .dataFileMissing, operation: "MMLog(\(path))",
                                     detail: "\(metadataPath) exists but the data file does not; remove the metadata to start a new log")
                }
            }
            // Attach. When no one else is attached, check that the header describes this data
            // file before anything is appended (or trimmed) on its word.
            if try Sys.lockByte(metaFD, MetadataLayout.attachLockByte, F_WRLCK, wait: false, "\(metadataPath) attach") {
                try Self.recoverInterruptedTrim(meta, dataFD, path)
                try Self.checkAgainstData(meta, dataFD, path, metadataPath)
                _ = try Sys.lockByte(metaFD, MetadataLayout.attachLockByte, F_RDLCK, wait: true, "\(metadataPath) attach")
            } else {
                _ = try Sys.lockByte(metaFD, MetadataLayout.attachLockByte, F_RDLCK, wait: true, "\(metadataPath) attach")
                // If a trimmer held the lock and died, we are alone: it excluded everyone else,
                // and later openers wait on the init lock we hold.
                try Self.recoverInterruptedTrim(meta, dataFD, path)
            }
        } catch {
            if let mapped { Sys.unmap(mapped, MetadataLayout.headerSize) }
            if dataFD >= 0 { Sys.close(dataFD) }
            Sys.close(metaFD)  // with the header unmapped, this drops any lock taken above
            throw error
        }

        let meta = Metadata(base: mapped!)
        self.path = path
        self.metadataPath = metadataPath
        self.metadataFD = metaFD
        self.dataFD = dataFD
        self.header = meta
        self.cursor = meta.cursor
        self.fileSize = meta.fileSize
        self.chunkSize = Int(meta.chunkSize)
        self.chunkShift = chunkSize.trailingZeroBitCount
        self.chunkMask = chunkSize - 1
        self.ring = ChunkRing(maxChunks: options.maxChunks, chunkSize: chunkSize,
                              prefault: options.prefault, hugePages: options.hugePages)
        self.prefetcher = options.prefetch && options.prefault != .none
            ? Self.makePrefetcher(dataFD, path, chunkSize, options, meta.fileSize, slowPaths, closedFlag) : nil
        prepareNextChunk()
    }

    /// Starts the thread behind `Options.prefetch`. Its work holds no reference to the handle
    /// (close stops it before the state it uses goes away) and counts as a slow path, so close
    /// also waits for a prefault in progress.
    private static func makePrefetcher(_ fd: Int32, _ path: String, _ chunkSize: Int, _ options: Options,
                                       _ fileSize: UnsafeAtomic<UInt64>, _ slowPaths: UnsafeAtomic<Int>,
                                       _ closedFlag: UnsafeAtomic<Bool>) -> Prefetcher? {
        let hugePages = options.hugePages, how = options.prefault
        return Prefetcher { k in
            slowPaths.wrappingIncrement(ordering: .sequentiallyConsistent)
            defer { slowPaths.wrappingDecrement(ordering: .releasing) }
            if closedFlag.load(ordering: .sequentiallyConsistent) { return }
            let start = k * chunkSize
            // Only chunks already allocated: growing stays with the appenders (and trim).
            guard start + chunkSize <= Int(fileSize.load(ordering: .acquiring)),
                  let base = try? Sys.mapShared(fd, chunkSize, start, path, hugePages: hugePages)
            else { return }
            // Never SIGBUS: if a trim cut the file meanwhile, the populate fails with EFAULT.
            Sys.prefault(base, chunkSize, how)
            Sys.unmap(base, chunkSize)
        }
    }

    /// Allocates and maps (and prefaults) the chunk the next append goes to, so that the
    /// first append does not pay for it. Best effort: a failure here (a full disk) shows
    /// again, as an error, at that append.
    private func prepareNextChunk() {
        let next = Int(cursor.load(ordering: .relaxed) & ~MetadataLayout.sealBit)
        do throws(MMLogError) {
            try ensureAllocated(next + 1)
            let allocated = Int(fileSize.load(ordering: .acquiring))
            _ = try ring.load(next >> chunkShift, fd: dataFD, path: path, allocatedEnd: allocated)
            prefetcher?.request((next >> chunkShift) + 1)
        } catch {}
    }

    /// A sealed cursor with us attached means a trimmer died mid-trim (a live one would hold
    /// the attach lock exclusively). Whether or not it truncated, everything below
    /// min(actual size, trimCursor) is allocated; the next append past it grows again.
    private static func recoverInterruptedTrim(_ meta: Metadata, _ dataFD: Int32, _ path: String) throws(MMLogError) {
        guard meta.cursor.load(ordering: .acquiring) & MetadataLayout.sealBit != 0 else { return }
        let end = meta.trimCursor
        let actual = try Sys.size(dataFD, path)
        meta.fileSize.store(min(UInt64(actual), end), ordering: .releasing)
        meta.cursor.store(end, ordering: .releasing)
    }

    /// Checks, with no other handle attached, that the header describes this data file:
    /// every allocated byte exists, the cursor is within reach of the end, and every byte past
    /// the cursor is zero (appends never write there). A header that fails would make appends
    /// overwrite records or a trim cut them off, so it is refused.
    private static func checkAgainstData(_ meta: Metadata, _ dataFD: Int32, _ path: String, _ metadataPath: String) throws(MMLogError) {
        let actual = UInt64(try Sys.size(dataFD, path))
        let allocated = meta.fileSize.load(ordering: .acquiring)
        let end = meta.cursor.load(ordering: .acquiring)
        func refuse(_ why: String) -> MMLogError {
            MMLogError(kind: .corruptMetadata, operation: "MMLog(\(path))",
                       detail: "\(metadataPath) does not match the data file: \(why)")
        }
        if allocated > actual {
            throw refuse("it records \(allocated) bytes allocated but the file has \(actual) (truncated by another program?)")
        }
        if end > max(actual, allocated) + MetadataLayout.maxCursorLead {
            throw refuse("its cursor \(end) is more than \(MetadataLayout.maxCursorLead) bytes past the file's end \(actual)")
        }
        if end < actual {
            let window = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(min(actual - end, 4096)), alignment: 8)
            defer { window.deallocate() }
            let n = try valueOrErrno("pread(\(path), \(window.count), \(end))") {
                Glibc.pread(dataFD, window.baseAddress, window.count, off_t(end))
            }
            if window[0..<n].contains(where: { $0 != 0 }) {
                throw refuse("bytes after its cursor \(end) are not zero (written by another program, or a stale header)")
            }
        }
    }

    deinit {
        try? close()
        Sys.unmap(header.base, MetadataLayout.headerSize)
        closedFlag.destroy()
        slowPaths.destroy()
    }

    // MARK: Appending

    /// Appends `bytes` as one record: its bytes land contiguously in the data file and no
    /// other append overlaps them. Returns the record's offset in the data file.
    ///
    /// Throws when the file cannot grow (a full disk: `isNoSpace`), or when the log is closed.
    /// A failed append takes back its reservation when no later one was made; otherwise it
    /// leaves a zero-filled hole of its size.
    @discardableResult
    @inline(__always)
    public func append(_ bytes: UnsafeRawBufferPointer) throws(MMLogError) -> Int {
        let count = bytes.count
        if count == 0 || closedFlag.load(ordering: .relaxed) {
            return try appendNothing(count)
        }
        // Acquiring: pairs with the releasing unseal of a trim in this handle, so a reservation
        // made after a trim sees the trimmed file size.
        let start = cursor.loadThenWrappingIncrement(by: UInt64(count), ordering: .acquiring)
        if start & MetadataLayout.sealBit != 0 {
            return try appendAfterSeal(bytes)
        }
        // start < 2^63 (no seal bit) and count < 2^63: the sum cannot wrap. Past this check
        // begin and end are below the allocated size, so the wrapping operators below are exact.
        let begin = Int(truncatingIfNeeded: start)
        if start &+ UInt64(truncatingIfNeeded: count) > fileSize.load(ordering: .acquiring) {  // pairs with the grower's releasing store
            return try appendSlow(bytes, at: begin, grow: true)
        }
        if count < MMLog.pwriteThreshold && copyThroughMappings(bytes, at: begin) { return begin }
        return try appendSlow(bytes, at: begin, grow: false)
    }

    /// Copies `bytes` to file offset `begin` when the chunk or two it touches are mapped in
    /// this handle; false (nothing copied) otherwise. The only place records are copied.
    @inline(__always)
    private func copyThroughMappings(_ bytes: UnsafeRawBufferPointer, at begin: Int) -> Bool {
        let count = bytes.count, source = bytes.baseAddress!
        let first = begin &>> chunkShift, last = (begin &+ count &- 1) &>> chunkShift
        if first == last {
            guard let chunk = ring.pin(first) else { return false }
            (chunk + (begin & chunkMask)).copyMemory(from: source, byteCount: count)
            ring.unpin(first)
            return true
        }
        guard last == first &+ 1, let head = ring.pin(first) else { return false }
        guard let tail = ring.pin(last) else {
            ring.unpin(first)
            return false
        }
        let headCount = chunkSize &- (begin & chunkMask)
        (head + (begin & chunkMask)).copyMemory(from: source, byteCount: headCount)
        tail.copyMemory(from: source + headCount, byteCount: count &- headCount)
        ring.unpin(last)
        ring.unpin(first)
        return true
    }

    /// Appends the bytes of `array` as one record.
    @discardableResult
    public func append(_ array: [UInt8]) throws(MMLogError) -> Int {
        try array.withUnsafeBytes { buffer in Result { () throws(MMLogError) -> Int in try append(buffer) } }.get()
    }

    /// Appends the UTF-8 bytes of `string` as one record (no newline is added).
    @discardableResult
    public func append(_ string: String) throws(MMLogError) -> Int {
        var string = string
        return try string.withUTF8 { utf8 in
            Result { () throws(MMLogError) -> Int in try append(UnsafeRawBufferPointer(utf8)) }
        }.get()
    }

    @inline(never)
    private func appendNothing(_ count: Int) throws(MMLogError) -> Int {
        if closedFlag.load(ordering: .relaxed) { throw closedError("append") }
        return Int(cursor.load(ordering: .relaxed) & ~MetadataLayout.sealBit)
    }

    /// Our fetch-add met a trim in progress (in this handle): the trim discards the increment,
    /// so wait for it to finish and reserve again.
    @inline(never)
    private func appendAfterSeal(_ bytes: UnsafeRawBufferPointer) throws(MMLogError) -> Int {
        while cursor.load(ordering: .acquiring) & MetadataLayout.sealBit != 0 {
            sched_yield()
        }
        return try append(bytes)
    }

    /// Everything but the common case: growing the file, mapping chunks, records that span
    /// chunks, and slots still pinned by a slow thread.
    @inline(never)
    private func appendSlow(_ bytes: UnsafeRawBufferPointer, at begin: Int, grow: Bool) throws(MMLogError) -> Int {
        let end = begin + bytes.count
        do throws(MMLogError) {
            try enterSlowPath("append")
            defer { slowPaths.wrappingDecrement(ordering: .releasing) }
            if grow { try ensureAllocated(end) }
            let first = begin >> chunkShift, last = (end - 1) >> chunkShift
            if last <= first + 1 && bytes.count < MMLog.pwriteThreshold {
                let allocated = Int(fileSize.load(ordering: .acquiring))
                var mappedAll = true
                for k in first...last where try ring.load(k, fd: dataFD, path: path, allocatedEnd: allocated) == .busy {
                    mappedAll = false
                }
                prefetcher?.request(last + 1)
                if mappedAll && copyThroughMappings(bytes, at: begin) { return begin }
            }
            // Spans a whole chunk, or its slot is held by a slower thread: one pwrite, no waiting.
            try Sys.pwriteAll(dataFD, bytes, begin, path)
            return begin
        } catch {
            giveBack(begin, end)
            throw error
        }
    }

    /// Counts this thread into the slow paths unless the handle is closed. Sequentially
    /// consistent with `close`: either close sees our count or we see its flag.
    private func enterSlowPath(_ operation: String) throws(MMLogError) {
        slowPaths.wrappingIncrement(ordering: .sequentiallyConsistent)
        if closedFlag.load(ordering: .sequentiallyConsistent) {
            slowPaths.wrappingDecrement(ordering: .releasing)
            throw closedError(operation)
        }
    }

    /// Returns a reservation that will not be written, if nothing was reserved after it.
    private func giveBack(_ begin: Int, _ end: Int) {
        _ = cursor.compareExchange(expected: UInt64(end), desired: UInt64(begin), ordering: .relaxed)
    }

    /// Makes sure the data file is allocated up to `end`, growing it (one process at a time)
    /// to the chunk boundary past `end` plus one more chunk, so other writers rarely wait.
    private func ensureAllocated(_ end: Int) throws(MMLogError) {
        try growLock.withLock { (_: inout Void) throws(MMLogError) in
            if UInt64(end) <= fileSize.load(ordering: .acquiring) { return }
            _ = try Sys.lockByte(metadataFD, MetadataLayout.growLockByte, F_WRLCK, wait: true, "\(metadataPath) grow")
            defer { _ = try? Sys.lockByte(metadataFD, MetadataLayout.growLockByte, F_UNLCK, wait: true, "\(metadataPath) grow") }
            let size = Int(fileSize.load(ordering: .acquiring))
            if end <= size { return }
            let roomy = ((end + chunkMask) & ~chunkMask) + chunkSize
            let target: Int
            do throws(MMLogError) {
                try allocate(from: size, to: roomy)
                target = roomy
            } catch where error.isNoSpace {
                // Nearly full: try for just this record (to a page boundary) before giving up.
                let page = Sys.pageSize
                let tight = (end + page - 1) / page * page
                try allocate(from: size, to: tight)
                target = tight
            }
            fileSize.store(UInt64(target), ordering: .releasing)  // pairs with appenders' acquiring loads
        }
    }

    /// fallocate, or ftruncate where the filesystem cannot allocate. With ftruncate the
    /// blocks are allocated only when first written, so a full disk shows as SIGBUS at the
    /// store instead of an error from `append`.
    private func allocate(from size: Int, to target: Int) throws(MMLogError) {
        do throws(MMLogError) {
            try Sys.fallocate(dataFD, size, target - size, path)
        } catch where error.errno == EOPNOTSUPP || error.errno == ENOSYS {
            if try Sys.size(dataFD, path) < target {
                try Sys.ftruncate(dataFD, target, path)
            }
        }
    }

    /// Writes every appended byte that is in memory to the device, whichever process wrote it
    /// (stores through the mappings included): `fdatasync` of the data file. Appends made
    /// while it runs may or may not be included. Costs a device flush: it is what the
    /// article's log service gave up when it dropped `fsync` per message.
    public func sync() throws(MMLogError) {
        try enterSlowPath("sync")
        defer { slowPaths.wrappingDecrement(ordering: .releasing) }
        _ = try valueOrErrno("fdatasync(\(path))") { fdatasync(dataFD) }
    }

    // MARK: Trimming and closing

    /// Truncates the data file to the end of the last record, when no other handle (in any
    /// process) is attached. Returns whether it truncated. Idempotent.
    ///
    /// With other handles attached it does nothing and returns false: truncating could pull
    /// pages from under their mappings. The last handle to close trims.
    @discardableResult
    public func trim() throws(MMLogError) -> Bool {
        try enterSlowPath("trim")
        defer { slowPaths.wrappingDecrement(ordering: .releasing) }
        return try growLock.withLock { (_: inout Void) throws(MMLogError) -> Bool in
            // Upgrade our shared attach lock; this fails while anyone else holds it.
            guard try Sys.lockByte(metadataFD, MetadataLayout.attachLockByte, F_WRLCK, wait: false, "\(metadataPath) attach")
            else { return false }
            defer { _ = try? Sys.lockByte(metadataFD, MetadataLayout.attachLockByte, F_RDLCK, wait: true, "\(metadataPath) attach") }
            try truncateToCursor()
            return true
        }
    }

    /// Truncates the data file to the cursor. The caller holds the attach lock exclusively and
    /// `growLock`, so the only other appenders are this handle's threads. Sealing the cursor
    /// stops them reserving past the truncation point; those with earlier reservations write
    /// below it, where truncation does not reach.
    private func truncateToCursor() throws(MMLogError) {
        var end = cursor.load(ordering: .relaxed)
        while true {
            header.trimCursor = end  // for recovery, should this process die while sealed
            let (sealed, seen) = cursor.compareExchange(
                expected: end, desired: end | MetadataLayout.sealBit, ordering: .acquiringAndReleasing)
            if sealed { break }
            end = seen
        }
        defer { cursor.store(end, ordering: .releasing) }  // unseal; pairs with appenders' acquiring fetch-add
        try Sys.ftruncate(dataFD, Int(end), path)
        fileSize.store(end, ordering: .releasing)
    }

    /// Detaches this handle. If no other handle is attached, trims the data file to the
    /// appended bytes first. Idempotent; appends after it throw `.closed`.
    public func close() throws(MMLogError) {
        if closedFlag.exchange(true, ordering: .sequentiallyConsistent) { return }
        ring.close()
        prefetcher?.stop()  // after the flag: a prefault it starts now returns at once
        while slowPaths.load(ordering: .sequentiallyConsistent) != 0 { sched_yield() }
        defer {
            // Unlock explicitly: the header stays mapped until deinit, and the mapping keeps the
            // open file description (and so its OFD locks) alive after the fd is closed.
            _ = try? Sys.lockByte(metadataFD, MetadataLayout.attachLockByte, F_UNLCK, wait: true, "\(metadataPath) attach")
            Sys.close(dataFD)
            Sys.close(metadataFD)
        }
        // Drop our shared lock, then try for the exclusive one: of several handles closing at
        // once, at least the last to try succeeds, so the file always ends trimmed.
        _ = try Sys.lockByte(metadataFD, MetadataLayout.attachLockByte, F_UNLCK, wait: true, "\(metadataPath) attach")
        if try Sys.lockByte(metadataFD, MetadataLayout.attachLockByte, F_WRLCK, wait: false, "\(metadataPath) attach") {
            try growLock.withLock { (_: inout Void) throws(MMLogError) in try truncateToCursor() }
        }
    }

    private func closedError(_ operation: String) -> MMLogError {
        MMLogError(kind: .closed, operation: "\(operation)(\(path))", detail: "the log is closed")
    }

    // MARK: Inspection

    /// Bytes reserved so far: the offset the next record will get (absent other writers).
    public var endOffset: Int {
        Int(cursor.load(ordering: .acquiring) & ~MetadataLayout.sealBit)
    }

    /// Bytes the data file is allocated to (at least `endOffset` once appends finish).
    public var allocatedSize: Int { Int(fileSize.load(ordering: .acquiring)) }

    /// Chunks this handle has mapped right now (at most `maxChunks`).
    public var mappedChunks: Int { ring.mappedCount }
}
