#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CMMLogShims
import Synchronization

/// A log file that many processes and threads append to at once.
///
/// The data file at `path` holds exactly the appended bytes, in reservation order. Beside it,
/// `<path>.mmlog` holds the shared cursor, the writer table and the hole table (see
/// `MetadataLayout`). An append reserves its byte range with one atomic fetch-add on the cursor
/// and copies the record into a shared mapping of the data file; no lock, allocation or system
/// call is on that path while the range lies in a chunk this process has mapped.
///
/// One `MMLog` may be shared by all threads of a process. After `fork()` a handle inherited by
/// the child refuses to work there (`.forked`): open one in the child instead.
///
/// The code is one file per concern: this file (the API and the fast path), `Opening.swift`
/// and `Recovery.swift`, `Appending.swift` (the slow paths), `Growth.swift`, `WriterTable.swift`,
/// `Holes.swift`, `Closing.swift` (trim and close), `Durability.swift` (sync), `Reader.swift`.
public final class MMLog: @unchecked Sendable {
    // @unchecked: the mutable state is atomic (shared header, `closedFlag`), behind a Mutex
    // (`files`, each file's locks), or immutable.

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
        /// Use `hugePages` and `prefault` only while the log fills fast and is not being
        /// synced, and 4 KiB pages dirtied one at a time otherwise, so a log written slowly or
        /// synced often writes about its own bytes to the device (see `PageStrategy`). False:
        /// every chunk gets `hugePages` and `prefault`.
        public var adaptivePages: Bool
        /// Rotate the log when it passes this many bytes (nil: never): the record that
        /// crosses the size ends the file, and every later one goes to the new log. The
        /// log's threshold is the first one set (by its creator or the first handle that has
        /// one): give every process the same.
        public var rotateAtBytes: Int?
        /// When this handle rotates, remove the oldest rotated files beyond this many (nil:
        /// keep all). Rotated files are named `<path>.<UTC time>` (see `MMLog.rotate`).
        public var keepRotated: Int?

        public static let defaultChunkSize = 2 << 20  // see the README: adaptive pages, scripts/sweep_mmlog.sh
        public static let defaultMaxChunks = 4
        /// Above this many chunks a handle's mappings would be absurd (4096 x 1 GiB at most).
        public static let maxMaxChunks = 4096

        public init(chunkSize: Int = Options.defaultChunkSize, maxChunks: Int = Options.defaultMaxChunks,
                    permissions: mode_t = 0o644, prefault: Prefault = .write, hugePages: Bool = true,
                    prefetch: Bool = true, adaptivePages: Bool = true, rotateAtBytes: Int? = nil,
                    keepRotated: Int? = nil) {
            self.prefetch = prefetch
            self.adaptivePages = adaptivePages
            self.rotateAtBytes = rotateAtBytes
            self.keepRotated = keepRotated
            self.chunkSize = chunkSize
            self.maxChunks = maxChunks
            self.permissions = permissions
            self.prefault = prefault
            self.hugePages = hugePages
        }

        /// Why these options cannot open a log, or nil when they can.
        public func problem(pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))) -> String? {
            if chunkSize <= 0 || chunkSize % pageSize != 0 || chunkSize & (chunkSize - 1) != 0 || chunkSize > MetadataLayout.maxChunkSize {
                return "chunk size \(chunkSize) must be a power of two, a multiple of the page size (\(pageSize)) and at most 1 GiB"
            }
            if maxChunks < 2 {
                return "maxChunks \(maxChunks) must be at least 2 (a record may straddle two chunks)"
            }
            if maxChunks > Options.maxMaxChunks {
                return "maxChunks \(maxChunks) must be at most \(Options.maxMaxChunks)"
            }
            if let rotateAtBytes, rotateAtBytes < 1 || UInt64(rotateAtBytes) > MetadataLayout.maxLogSize {
                return "rotateAtBytes \(rotateAtBytes) must be at least 1 and at most \(MetadataLayout.maxLogSize)"
            }
            if let keepRotated, keepRotated < 0 {
                return "keepRotated \(keepRotated) must not be negative"
            }
            return nil
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
    /// The threshold on tmpfs: there a store through a mapping takes a fault per page (the
    /// page allocated by growth, zeroed and mapped at the first store) and unmapping takes the
    /// page tables down again, while pwrite copies into the page cache alone.
    static let tmpfsPwriteThreshold = 2048

    /// Records of at least this many bytes go through pwrite in this handle
    /// (`pwriteThreshold`, or `tmpfsPwriteThreshold` when the log is on tmpfs).
    let pwriteAt: Int

    /// Path of the data file.
    public let path: String
    /// Path of the metadata file (`path + ".mmlog"`).
    public let metadataPath: String
    /// The options this handle was opened with.
    public let options: Options
    /// What opening found and repaired, when this handle was the first to attach after the
    /// log was left unclean (a crash, a power loss, a copied or upgraded metadata file).
    public let recovery: RecoveryReport?
    /// Whether opening found the log at the path in the middle of a rotation (retired by a
    /// rotator, or its data file renamed away by logrotate or deleted) and finished it: this
    /// handle is on the new log that rotation started.
    public let openedAfterRotation: Bool

    /// Unique among every handle this process ever opens: the key of its threads' hot entries.
    let id: UInt64
    /// The process that opened the handle: a child after fork() is refused.
    let ownerPID: pid_t
    // UnsafeAtomic rather than ManagedAtomic: the latter's storage is reached through a
    // call the optimiser left in the fast path. Created after everything that can throw in
    // init (a failed init runs no deinit), destroyed in deinit.
    let closedFlag: UnsafeAtomic<Bool>
    /// The file this handle appends to now (the last) and older ones (retired by rotation),
    /// which stay alive, fenced off, until deinit: threads' hot entries may point into them.
    let files: FileList
    /// Serialises moving to a new log after a rotation among this handle's threads.
    let mover = Mutex<Void>(())

    private static let nextID = Atomic<UInt64>(1)

    /// Opens the log at `path`, creating the data and metadata files if needed.
    ///
    /// Any number of processes may open the same new path at once: exactly one creates the
    /// metadata and the others wait for it (on a lock the kernel releases if it dies). An
    /// existing data file without metadata is kept: appends go after its current end. A log
    /// left unclean by a crash is recovered here, without operator action (`recovery` says
    /// what was found).
    public convenience init(path: String, options: Options = Options()) throws(MMLogError) {
        try self.init(path: path, options: options, mode: .append)
    }

    /// `mode` `.recover`: refuse (`.dataFileInUse`) when another handle is attached.
    init(path: String, options: Options, mode: LogFile.OpenMode) throws(MMLogError) {
        if let why = options.problem() {
            throw MMLogError(kind: .invalidOptions, operation: "MMLog(\(path))", detail: why)
        }
        mmlog_register_atfork()
        mmlog_membarrier_prepare()  // before the prefetch thread: see the shim
        let file = try LogFile.open(path: path, options: options, mode: mode)
        self.path = path
        self.metadataPath = file.metadataPath
        self.options = options
        self.recovery = file.recovery
        self.openedAfterRotation = file.openedAfterRotation
        self.id = Self.nextID.add(1, ordering: .relaxed).oldValue
        self.ownerPID = getpid()
        self.files = FileList(file)
        self.pwriteAt = Sys.filesystemMagic(file.dataFD) == PageStrategy.tmpfsMagic ? Self.tmpfsPwriteThreshold : Self.pwriteThreshold
        self.closedFlag = .create(false)
        file.prepareNextChunk()
    }

    deinit {
        try? close()
        for file in files.all(locking: getpid() == ownerPID) { file.release() }
        closedFlag.destroy()
    }

    /// The file appends go to now.
    var current: LogFile { files.current }

    /// Chunk size in force (the log's own, which may differ from the options when it existed).
    public var chunkSize: Int { current.chunkSize }

    // MARK: Appending

    /// Appends `bytes` as one record: its bytes land contiguously in the data file and no
    /// other append overlaps them. Returns the record's offset in the data file.
    ///
    /// Throws when the file cannot grow (a full disk: `isNoSpace`), when the log is closed,
    /// and in a child process that inherited the handle across fork(). A failed append leaves
    /// nothing behind: its reservation is given back, voided (a full disk), or recorded as a
    /// hole that readers skip.
    @discardableResult
    @inline(__always)
    public func append(_ bytes: UnsafeRawBufferPointer) throws(MMLogError) -> Int {
        let hot = mmlog_hot()
        if _fastPath(hot.pointee.owner == id) {
            let result = reserveAndCopy(hot, bytes)
            if _fastPath(result >= 0) { return result }
            if result == Self.reserved { return try finishReservedOrRetry(hot, bytes) }
        }
        return try appendUnreserved(bytes)
    }

    /// `reserveAndCopy`'s result when it made a reservation it could not complete.
    static let reserved = -2

    /// The whole fast path: publish the bound, reserve, publish the reservation, copy, publish
    /// completion (the protocol and its proof are in `MetadataLayout`). Returns the record's
    /// offset; -1 when it reserved nothing (no slot yet, an empty or oversized record, the
    /// handle closed, the cursor sealed or retired); `reserved` when the reservation it made
    /// (recorded in the slot) needs the slow path: growing the file, a chunk not mapped here,
    /// a large record.
    @inline(__always)
    func reserveAndCopy(_ hot: UnsafeMutablePointer<mmlog_hot_t>, _ bytes: UnsafeRawBufferPointer) -> Int {
        let count = bytes.count
        // One unsigned compare rejects both 0 and sizes past the largest record.
        if UInt(bitPattern: count &- 1) >= UInt(MetadataLayout.maxRecordSize) { return -1 }
        let slot = UnsafeMutableRawPointer(hot.pointee.slot.unsafelyUnwrapped)
        let state = Metadata.slotWord(slot, Slot.stateOffset)
        let last = state.load(ordering: .relaxed)
        state.store(last | Slot.inFlight, ordering: .relaxed)
        // Keeps the store above before the flag load (the other half is close's membarrier).
        mmlog_compiler_barrier()
        if closedFlag.load(ordering: .relaxed) {
            state.store(last, ordering: .relaxed)
            return -1
        }
        // Loaded before the fetch-add: a void (which only happens at or above the allocated
        // size) can then never take back a reservation this path goes on to write.
        let allocated = sharedWord(hot.pointee.file_size).load(ordering: .acquiring)  // pairs with the grower's release
        // Releasing: orders the bound above before the reservation. Acquiring: pairs with a
        // trim's releasing unseal in this handle.
        let word = sharedWord(hot.pointee.cursor).loadThenWrappingIncrement(by: UInt64(truncatingIfNeeded: count),
                                                                          ordering: .acquiringAndReleasing)
        if word & Cursor.flagMask != 0 {
            state.store(last, ordering: .relaxed)
            return -1
        }
        let start = word & Cursor.offsetMask
        let end = start &+ UInt64(truncatingIfNeeded: count)
        Metadata.slotWord(slot, Slot.endOffset).store(end, ordering: .relaxed)
        state.store((word & (Cursor.offsetMask | Cursor.genMask)) | Slot.inFlight | Slot.exact, ordering: .releasing)
        // And after it: a trim (this handle's, alone) may have cut the file between the first
        // load and the fetch-add; the trim stores the cut size before it unseals the cursor,
        // which the fetch-add acquired, so a relaxed load sees that size or a later one. A trim
        // after this load cuts at or above our end. (The first load's acquire is what orders a
        // grower's allocation before the copy: both loads must be at or above the end.)
        let allocatedNow = sharedWord(hot.pointee.file_size).load(ordering: .relaxed)
        if end > allocated || end > allocatedNow || count >= pwriteAt { return Self.reserved }
        // The state store above comes before the ring's tag load (the other half is the
        // remapper's membarrier, `ChunkRing`).
        mmlog_compiler_barrier()
        if copyThroughMappings(hot, bytes, at: Int(truncatingIfNeeded: start)) {
            state.store(end, ordering: .releasing)  // pairs with readers' acquiring slot loads
            return Int(truncatingIfNeeded: start)
        }
        return Self.reserved
    }

    /// Copies `bytes` to file offset `begin` when the chunk or two it touches are mapped in
    /// this handle; false (nothing copied) otherwise. The only place records are copied. The
    /// thread's writer slot shows `[begin, begin + count)` in flight (step 3), stored before
    /// this is called with at least a compiler barrier between: that keeps the mapping in
    /// place while it copies (see `ChunkRing`).
    @inline(__always)
    func copyThroughMappings(_ hot: UnsafeMutablePointer<mmlog_hot_t>, _ bytes: UnsafeRawBufferPointer, at begin: Int) -> Bool {
        // unsafelyUnwrapped: set by `fill` before `owner`, and a non-empty buffer has a base.
        let count = bytes.count, source = bytes.baseAddress.unsafelyUnwrapped
        let shift = Int(truncatingIfNeeded: hot.pointee.chunk_shift), mask = Int(truncatingIfNeeded: hot.pointee.chunk_mask)
        let words = UnsafeMutableRawPointer(hot.pointee.ring_words.unsafelyUnwrapped).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self)
        let bases = UnsafeMutableRawPointer(hot.pointee.ring_bases.unsafelyUnwrapped).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        let ringMask = hot.pointee.ring_mask
        let first = begin &>> shift, last = (begin &+ count &- 1) &>> shift
        if first == last {
            guard let chunk = ChunkRing.mapping(words, bases, ringMask, first) else { return false }
            mmlog_copy(chunk + (begin & mask), source, count)
            return true
        }
        guard last == first &+ 1, let head = ChunkRing.mapping(words, bases, ringMask, first),
              let tail = ChunkRing.mapping(words, bases, ringMask, last) else { return false }
        let headCount = Int(truncatingIfNeeded: hot.pointee.chunk_size) &- (begin & mask)
        mmlog_copy(head + (begin & mask), source, headCount)
        mmlog_copy(tail, source + headCount, count &- headCount)
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

    // MARK: Inspection

    /// Bytes reserved so far: the offset the next record will get (absent other writers).
    public var endOffset: Int {
        Int(Cursor.offset(current.cursor.load(ordering: .acquiring)))
    }

    /// The committed watermark now: every byte below it is final (see `MetadataLayout`).
    public var committedOffset: Int {
        Int(current.watermark().offset)
    }

    /// Bytes the data file is allocated to (at least `endOffset` once appends finish).
    public var allocatedSize: Int { Int(clamping: current.fileSize.load(ordering: .acquiring)) }

    /// Chunks this handle has mapped right now (at most `maxChunks`).
    public var mappedChunks: Int { current.ring.mappedCount }
}

/// A handle's files, under a pthread mutex rather than a Swift `Mutex` so that a child after
/// fork() can read the list without a lock another thread may have held at the fork.
final class FileList: @unchecked Sendable {
    private var files: [LogFile]
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(_ first: LogFile) {
        files = [first]
        pthread_mutex_init(mutex, nil)
        Self.watchRing(of: first)
    }

    /// Lets `file`'s chunk ring evict a chunk once no thread of this handle copies into it:
    /// before the file maps its first chunk (every file a handle appends to joins this list
    /// first).
    private static func watchRing(of file: LogFile) {
        file.ring.watch { [unowned file] k in file.copyMayBeInFlight(chunk: k) }
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    var current: LogFile {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return files[files.count - 1]
    }

    func append(_ file: LogFile) {
        Self.watchRing(of: file)
        pthread_mutex_lock(mutex)
        files.append(file)
        pthread_mutex_unlock(mutex)
    }

    /// The files before the current one that this handle has not left yet (retired by a
    /// rotation while one of its threads was in flight there); no allocation when none.
    func retired() -> [LogFile] {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var found: [LogFile] = []
        for file in files.dropLast() where !file.fenced.load(ordering: .acquiring) { found.append(file) }
        return found
    }

    /// Every file, oldest first. `locking: false` only in a single-threaded child after fork.
    func all(locking: Bool = true) -> [LogFile] {
        if !locking { return files }
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return files
    }
}

/// A pointer to a shared 64-bit word (from a thread's `mmlog_hot_t`), as an atomic.
@inline(__always)
func sharedWord(_ pointer: UnsafeMutablePointer<UInt64>?) -> UnsafeAtomic<UInt64> {
    UnsafeAtomic(at: UnsafeMutableRawPointer(pointer.unsafelyUnwrapped).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
}
