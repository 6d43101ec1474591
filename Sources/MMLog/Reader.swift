#if canImport(Glibc)
import Glibc
#endif
import Atomics

/// Reads a log while it is written: only committed bytes (every byte below the committed
/// watermark, see `MetadataLayout`), with holes left by dead writers, failed appends and
/// crashes skipped.
///
/// A reader opens both files read-only and takes no lock: it never blocks or delays writers,
/// never keeps the last writer from trimming, and reads the data file with `pread` (no
/// mapping), so a file that shrinks under it cannot SIGBUS it. It also reads a log whose
/// writers have all closed, and a plain file with no metadata (then everything is committed).
///
/// Not thread-safe: use one reader per thread.
/// A reader's view of a log's metadata: its descriptor, the read-only mapping, and how it
/// tells live writers from dead ones.
typealias ReaderMetadata = (fd: Int32, header: Metadata, length: Int, liveness: Liveness)

public final class MMLogReader {
    /// The data file.
    public let path: String
    /// The metadata file beside it.
    public let metadataPath: String
    /// Whether the log has metadata (false: a plain file, read up to its size).
    public var hasMetadata: Bool { metadata != nil }

    private let dataFD: Int32
    private var metadata: ReaderMetadata?
    /// The highest watermark computed so far (watermarks may move backwards; every one is valid).
    private var watermarkSeen: UInt64 = 0
    /// Slots seen in flight whose owner had died: not waited for.
    private var deadSlots: Set<DeadSlot> = []
    /// Since when (CLOCK_MONOTONIC ns) the watermark has been held below the cursor at one value.
    private var heldSince: (offset: UInt64, nanos: UInt64)?
    private var holeCache: (count: UInt64, dead: Set<DeadSlot>, holes: [Range<UInt64>])?
    /// For each dead slot whose range was never published: where its scan for the zero run
    /// goes on (everything below was looked at; see `unknownExtentHole`).
    private var scanResumesAt: [DeadSlot: UInt64] = [:]

    /// How long (ns) the watermark may sit still behind an in-flight slot before the reader
    /// checks whether that slot's owner is alive (one F_OFD_GETLK per such slot). A reader
    /// that follows a log keeps the default; a one-shot read (`mmlog cat`) uses 0.
    public var deadWriterProbeDelay = MMLogReader.defaultDeadWriterProbeDelay
    public static let defaultDeadWriterProbeDelay = 20_000_000

    /// For tests (package access): called between opening the data file and its metadata.
    nonisolated(unsafe) package static var testBetweenOpensHook: (@Sendable () -> Void)?

    /// Opens the log at `path` (the data file) for reading.
    ///
    /// The data file and its metadata are opened one after the other; a rotation between the
    /// two would pair one log's data with the next one's metadata, so the pair is checked (the
    /// metadata records its data file's identity) and opened again when it does not match. A
    /// pair that never matches (files copied elsewhere) is read as a plain file.
    public init(path: String) throws(MMLogError) {
        self.path = path
        self.metadataPath = path + ".mmlog"
        let directory = try LogDirectory(of: path)
        let name = LogDirectory.name(of: path)
        var attempts = 0
        while true {
            let fd: Int32
            do throws(MMLogError) {
                fd = try directory.open(name, O_RDONLY, for: "MMLogReader")
            } catch where error.errno == ENOENT {
                throw MMLogError(kind: .notALog, operation: "MMLogReader(\(path))", errno: ENOENT, detail: "no such file")
            }
            MMLogReader.testBetweenOpensHook?()
            let found: ReaderMetadata?
            do throws(MMLogError) {
                found = try Self.openMetadata(metadataPath, path: path, in: directory)
            } catch {
                Sys.close(fd)
                throw error
            }
            attempts += 1
            // No metadata: a plain file, unless a rotation renamed the data file we opened and
            // then its metadata between our two opens (the path then names another file, or
            // none). Read as plain, a live log's allocated zeros and half-copied records came
            // out as lines (the nemesis: `tail -F -n 5` started in that moment printed a torn
            // line and skipped a record). Open again.
            if found == nil, attempts < 50, let identity = try? Sys.identity(fd, path), directory.identity(of: name) != identity {
                Sys.close(fd)
                Sys.sleep(nanoseconds: 2_000_000)
                continue  // the path names nothing now: the open above says so (notALog, ENOENT)
            }
            if let found, found.header.version != MetadataLayout.version1,
               let identity = try? Sys.identity(fd, path),
               identity != FileIdentity(device: found.header.dataDevice, inode: found.header.dataInode) {
                Sys.unmap(found.header.base, found.length)
                found.liveness.close()
                Sys.close(found.fd)
                if attempts < 50 {
                    Sys.close(fd)
                    Sys.sleep(nanoseconds: 2_000_000)
                    continue
                }
                dataFD = fd
                metadata = nil
                return
            }
            dataFD = fd
            metadata = found
            return
        }
    }

    deinit {
        if let metadata {
            Sys.unmap(metadata.header.base, metadata.length)
            metadata.liveness.close()
            Sys.close(metadata.fd)
        }
        Sys.close(dataFD)
    }

    /// Maps the metadata read-only; nil when there is none (a plain file).
    private static func openMetadata(_ metadataPath: String, path: String, in directory: LogDirectory) throws(MMLogError) -> ReaderMetadata? {
        let fd: Int32
        do throws(MMLogError) {
            fd = try directory.open(LogDirectory.name(of: metadataPath), O_RDONLY, for: "MMLogReader")
        } catch where error.errno == ENOENT {
            return nil
        }
        do throws(MMLogError) {
            // Being created (empty, or not yet ready): wait for its creator (1 s at most), or a
            // reader opened with a new log would read it as a plain file for ever, zeros and
            // half-copied records included. A creator that died leaves it for the next writer.
            var size = try Sys.size(fd, metadataPath)
            for _ in 0..<100 where size < MetadataLayout.headerSize || !MetadataLayout.headerIsReady(fd) {
                Sys.sleep(nanoseconds: 10_000_000)
                size = try Sys.size(fd, metadataPath)
            }
            if size == 0 { Sys.close(fd); return nil }
            guard size >= MetadataLayout.headerSize else {
                throw MMLogError(kind: .notALog, operation: "MMLogReader(\(path))",
                                 detail: "\(metadataPath) is \(size) bytes: not an MMLog header")
            }
            let length = size >= MetadataLayout.metadataSize ? MetadataLayout.metadataSize : MetadataLayout.headerSize
            let base = try Sys.mapShared(fd, length, 0, metadataPath, writable: false)
            let header = Metadata.bind(base, length: length)  // binding writes nothing: fine read-only
            func refuse(_ why: String) -> MMLogError {
                Sys.unmap(base, length)
                return MMLogError(kind: .notALog, operation: "MMLogReader(\(path))", detail: "\(metadataPath): \(why)")
            }
            if header.state.load(ordering: .acquiring) != MetadataLayout.ready {
                if header.magic == 0 || header.magic == MetadataLayout.magic {
                    Sys.unmap(base, length)
                    Sys.close(fd)
                    return nil  // creation in progress: nothing appended yet
                }
                throw refuse("not an MMLog header")
            }
            if let (_, why) = header.problem(pageSize: Sys.pageSize, length: size) {
                throw refuse(why)
            }
            // Version 3: the lock file, if this reader may open it (else process ids).
            var liveness = Liveness(locks: Locks(fd: fd, region: 0, what: metadataPath))
            if header.version == MetadataLayout.version {
                let lockFD = try? directory.open(header.lockName, O_RDONLY, for: "MMLogReader")
                liveness = Liveness(locks: lockFD.map { Locks(fd: $0, region: Int(header.lockRegion), what: directory.describe(header.lockName)) })
            }
            return (fd, header, length, liveness)
        } catch {
            Sys.close(fd)
            throw error
        }
    }

    // MARK: The watermark

    /// Every byte below this offset is final. Advances as writers complete appends; passes a
    /// writer that died in flight within about `deadWriterProbeDelay` of its death.
    public func committedOffset() throws(MMLogError) -> Int {
        Int(clamping: try watermark())
    }

    private func watermark() throws(MMLogError) -> UInt64 {
        guard let metadata else {
            return UInt64(try Sys.size(dataFD, path))
        }
        let header = metadata.header
        if header.version == MetadataLayout.version1 {
            // No writer table: the cursor is final only once no one is attached.
            if try metadata.liveness.attached(header) {
                throw MMLogError(kind: .incompatibleMetadata, operation: "MMLogReader(\(path))",
                                 detail: "\(metadataPath) is format version 1, written by an older MMLog that is still attached; its readers cannot tell written bytes from reserved ones")
            }
            let word = header.cursor.load(ordering: .acquiring) & ~Cursor.sealBit
            return max(watermarkSeen, min(word, header.fileSize.load(ordering: .acquiring)))
        }
        var mark = header.watermark(excluding: deadSlots)
        if mark.blockers.isEmpty {
            heldSince = nil
        } else {
            let now = Sys.monotonicNanoseconds()
            if heldSince?.offset != mark.offset { heldSince = (mark.offset, now) }
            if now &- heldSince!.nanos >= UInt64(clamping: deadWriterProbeDelay) {
                if try probeDeadWriters(mark.blockers, metadata) {
                    mark = header.watermark(excluding: deadSlots)
                }
                heldSince = (mark.offset, now)
            }
        }
        // Forget dead slots that have since been reclaimed (their state changed).
        if !deadSlots.isEmpty {
            deadSlots = deadSlots.filter {
                header.slotState($0.slot).load(ordering: .relaxed) == $0.state && header.slotClaims($0.slot).load(ordering: .relaxed) == $0.claims
            }
        }
        var offset = mark.offset
        // A writer that died before publishing its range, whose zeros reach the watermark: its
        // extent is known only once a record lands after it, so the watermark stops at the
        // start of its zeros rather than hand them out as data.
        for dead in deadSlots where dead.state & Slot.exact == 0 {
            var resume = scanResumesAt[dead] ?? 0
            if header.unknownExtentHole(state: dead.state, dataFD: dataFD, limit: offset, known: mergeRanges(header.recordedHoles()),
                                        resume: &resume) == nil, resume < offset {
                offset = max(min(offset, resume), watermarkSeen)
            }
        }
        if mark.cursor & Cursor.retiredBit != 0 {
            offset = min(offset, header.retiredAt.load(ordering: .acquiring))  // reservations past it move on
        }
        watermarkSeen = max(watermarkSeen, offset)
        return watermarkSeen
    }

    /// Checks whether each in-flight slot holding the watermark back is still owned; a slot
    /// whose lock is free and whose state has not changed belonged to a writer that died in
    /// flight. Returns whether any was found.
    private func probeDeadWriters(_ blockers: [Watermark.Blocker], _ metadata: ReaderMetadata) throws(MMLogError) -> Bool {
        var found = false
        for blocker in blockers {
            let held = try metadata.liveness.slotAlive(metadata.header, blocker.slot)
            if held { continue }
            // The lock is free: dead, unless the slot moved on before its owner let go.
            let state = metadata.header.slotState(blocker.slot).load(ordering: .acquiring)
            let claims = metadata.header.slotClaims(blocker.slot).load(ordering: .relaxed)
            if state == blocker.state && claims == blocker.claims {
                deadSlots.insert(DeadSlot(slot: blocker.slot, state: state, claims: claims))
                found = true
            }
        }
        return found
    }

    /// The ranges readers skip: recorded holes and the ranges of writers found dead in flight.
    public func holes() throws(MMLogError) -> [Range<Int>] {
        currentHoles().map { Int(clamping: $0.lowerBound)..<Int(clamping: $0.upperBound) }
    }

    private func currentHoles() -> [Range<UInt64>] {
        guard let metadata, metadata.header.version != MetadataLayout.version1 else { return [] }
        let header = metadata.header
        let count = header.holeCount.load(ordering: .acquiring)
        if let cache = holeCache, cache.count == count, cache.dead == deadSlots { return cache.holes }
        var holes = header.recordedHoles()
        var unpublished: [DeadSlot] = []
        for dead in deadSlots {
            if let hole = header.deadHole(state: dead.state, end: header.slotEnd(dead.slot).load(ordering: .relaxed)) {
                holes.append(hole)
            } else {
                unpublished.append(dead)
            }
        }
        // Writers that died before publishing their range: found in the data (see
        // `unknownExtentHole`); not cached until found, as the watermark may yet reach it.
        var settled = true
        for dead in unpublished {
            let known = mergeRanges(holes)
            var resume = scanResumesAt[dead] ?? 0
            if let hole = header.unknownExtentHole(state: dead.state, dataFD: dataFD, limit: watermarkSeen, known: known, resume: &resume) {
                holes.append(hole)
            } else if resume != UInt64.max {
                settled = false  // not found below the watermark yet: look again, from `resume`, as it moves
            }
            scanResumesAt[dead] = resume
        }
        scanResumesAt = scanResumesAt.filter { deadSlots.contains($0.key) }
        holes = mergeRanges(holes)
        if settled { holeCache = (count, deadSlots, holes) }
        return holes
    }

    // MARK: Reading

    /// Reads committed bytes from `offset` into `buffer`, skipping holes. Returns how many
    /// bytes it put in `buffer` and the offset to read from next (past what it returned and
    /// any hole it skipped). Returns 0 bytes with `next == offset` when nothing past `offset`
    /// is committed yet.
    /// `end`, when given, stops the read there even if more is committed.
    public func read(from offset: Int, upTo end: Int? = nil, into buffer: UnsafeMutableRawBufferPointer) throws(MMLogError) -> (count: Int, next: Int) {
        var limit = try watermark()
        if let end { limit = min(limit, UInt64(max(0, end))) }
        var position = UInt64(max(0, offset))
        var filled = 0
        let holes = currentHoles()
        while position < limit && filled < buffer.count {
            if let hole = holes.first(where: { $0.contains(position) }) {
                position = min(hole.upperBound, max(limit, position))
                if position >= limit { break }
                continue
            }
            let nextHole = holes.first(where: { $0.lowerBound > position })?.lowerBound ?? UInt64.max
            let want = Int(min(limit, nextHole) - position)
            let count = min(want, buffer.count - filled)
            let n = try Sys.preadFully(dataFD, UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + count)]),
                                       Int(position), path)
            filled += n
            position += UInt64(n)
            if n < count {
                // Shorter than the watermark: the file was cut under us by another program.
                throw MMLogError(kind: .system, operation: "pread(\(path), \(count), \(position))", errno: EIO,
                                 detail: "the file ends below the committed watermark \(limit) (truncated by another program?)")
            }
        }
        return (filled, Int(position))
    }

    /// Reads up to `maxBytes` committed bytes from `offset`; see `read(from:into:)`.
    public func read(from offset: Int, upTo end: Int? = nil, maxBytes: Int = 1 << 20) throws(MMLogError) -> (bytes: [UInt8], next: Int) {
        var bytes = [UInt8](repeating: 0, count: maxBytes)
        let (count, next) = try bytes.withUnsafeMutableBytes { buffer in
            Result { () throws(MMLogError) -> (Int, Int) in try read(from: offset, upTo: end, into: buffer) }
        }.get()
        bytes.removeLast(maxBytes - count)
        return (bytes, next)
    }

    /// Waits until something past `offset` is committed, polling the mapped header with a
    /// short backoff (from 0.5 ms up to `maxPause`; no system call on the writers' side).
    /// Returns false when `timeoutNanoseconds` passes first (nil: wait for ever).
    public func waitForCommit(beyond offset: Int, timeoutNanoseconds: Int? = nil, maxPause: Int = 20_000_000) throws(MMLogError) -> Bool {
        let deadline = timeoutNanoseconds.map { Sys.monotonicNanoseconds().addingReportingOverflow(UInt64(clamping: $0)) }.map { $0.overflow ? UInt64.max : $0.partialValue }
        var pause = 500_000
        while true {
            if try committedOffset() > offset { return true }
            if let deadline, Sys.monotonicNanoseconds() >= deadline { return false }
            Sys.sleep(nanoseconds: pause)
            pause = min(pause * 2, maxPause)
        }
    }

    // MARK: State

    /// Whether every handle has detached (nothing more will be appended until one opens it).
    public func writersAttached() throws(MMLogError) -> Bool {
        guard let metadata else { return false }
        return try metadata.liveness.attached(metadata.header)
    }

    /// Whether a rotation retired this log (its data file was renamed and a new log started
    /// at the path); `retiredAt` is then its final end.
    public var retiredAt: Int? {
        guard let metadata, metadata.header.version != MetadataLayout.version1 else { return nil }
        let word = metadata.header.cursor.load(ordering: .acquiring)
        guard word & Cursor.retiredBit != 0 else { return nil }
        return Int(clamping: metadata.header.retiredAt.load(ordering: .acquiring))
    }

    /// The device and inode of the data file this reader reads.
    public var fileIdentity: (device: UInt64, inode: UInt64)? {
        guard let identity = try? Sys.identity(dataFD, path) else { return nil }
        return (identity.device, identity.inode)
    }

    /// A snapshot of the log's shared state, for `mmlog stat`.
    public func status() throws(MMLogError) -> MMLogStatus {
        try MMLogStatus(reader: self, dataFD: dataFD, metadata: metadata, committed: watermark(), holes: currentHoles(),
                        deadSlots: deadSlots)
    }
}
