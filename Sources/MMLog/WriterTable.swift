#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CMMLogShims
import Synchronization

// The writer table (see `MetadataLayout` and `Slot`): each appending thread owns a slot,
// found once per thread and handle and then used with plain stores; a slot's owner holds its
// lock byte, which the kernel releases when the process dies.

/// The slots one handle owns in one file: it holds their lock bytes; `free` ones belong to
/// no thread right now (their thread exited) and are handed out again without a system call.
struct SlotPool {
    var owned: [Int] = []
    var free: [Int] = []
}

extension LogFile {
    /// The index of the overflow slot: appenders that find no free slot take turns on it,
    /// under its lock (correct, but a system call per append).
    static var overflowSlot: Int { MetadataLayout.slotCount - 1 }

    /// A slot for the calling thread: a free one this handle owns, or a new one claimed from
    /// the shared table. Nil when every slot is taken.
    func claimSlot() throws(MMLogError) -> Int? {
        if let reused = pool.withLock({ $0.free.popLast() }) { return reused }
        let owned = ownedSlots
        let count = Self.overflowSlot
        let start = Int(UInt32(bitPattern: mmlog_gettid())) % count
        for step in 0..<count {
            let i = (start + step) % count
            if owned.contains(i) { continue }
            guard try locks.take(MetadataLayout.slotLockBase + i, F_WRLCK, wait: false, "slot \(i)")
            else { continue }
            try adopt(slot: i)
            pool.withLock { $0.owned.append(i) }
            return i
        }
        return nil
    }

    /// Takes over slot `i`, whose lock we now hold: a previous owner that died in flight left
    /// a reservation, recorded here as a hole before the slot is reset.
    private func adopt(slot i: Int) throws(MMLogError) {
        _ = try recordDeadOwnersHole(slot: i)
        let bound = header.idleBound  // for the first append
        header.slotClaims(i).wrappingIncrement(ordering: .relaxed)
        header.setSlotOwner(i, pid: getpid(), tid: mmlog_gettid())
        header.slotState(i).store(bound, ordering: .releasing)
        var high = header.slotHighWater.load(ordering: .relaxed)
        while high < UInt64(i + 1) {
            let (done, seen) = header.slotHighWater.compareExchange(expected: high, desired: UInt64(i + 1), ordering: .relaxed)
            if done { break }
            high = seen
        }
    }

    /// The hole a dead writer's in-flight slot leaves: its reservation [start, end), cut back
    /// where a void took part of it; nil when the slot never recorded its range (it died
    /// between its fetch-add and step 3, before copying anything: zeros of unknown extent).
    func deadHole(slot i: Int, state: UInt64) -> Range<UInt64>? {
        if let hole = header.deadHole(state: state, end: header.slotEnd(i).load(ordering: .relaxed)) { return hole }
        // Its range was never published: find it in the data, below the watermark that
        // passes this slot (every other range below it is committed).
        let dead = DeadSlot(slot: i, state: state, claims: header.slotClaims(i).load(ordering: .relaxed))
        let limit = header.watermark(excluding: [dead]).offset
        var resume: UInt64 = 0
        return header.unknownExtentHole(state: state, dataFD: dataFD, limit: limit, known: header.recordedHoles(), resume: &resume)
    }

    /// The slots this handle owns (their locks are ours: F_OFD_GETLK on our own descriptor
    /// cannot see them held).
    var ownedSlots: Set<Int> { Set(pool.withLock { $0.owned }) }

    /// Whether slot `i`'s owner is alive: one of `ours`, or its lock byte is held (an error
    /// probing counts as alive: never take a live writer's reservation for a dead one's).
    func slotOwnerAlive(_ i: Int, ours: Set<Int>) -> Bool {
        ours.contains(i) || ((try? locks.held(MetadataLayout.slotLockBase + i, "slot \(i)")) ?? true)
    }

    /// Slot `i`, whose lock we hold, was left in flight by an owner that died: records its
    /// reservation as a hole (under the grow lock). Returns whether it was in flight.
    func recordDeadOwnersHole(slot i: Int) throws(MMLogError) -> Bool {
        let state = header.slotState(i).load(ordering: .acquiring)
        guard state & Slot.inFlight != 0 else { return false }
        try withGrowLock { () throws(MMLogError) in
            if let hole = deadHole(slot: i, state: state) { header.recordHole(hole.lowerBound, hole.upperBound, dataFD: dataFD) }
        }
        return true
    }

    /// Returns a slot to the handle's pool (its thread exited). The slot stays owned.
    func releaseSlot(_ i: Int) {
        pool.withLock { $0.free.append(i) }
    }

    /// The committed watermark now, from this handle's view of the header (no liveness
    /// probes: a dead writer holds it back until a reader or the next claimer of its slot
    /// sees it dead).
    func watermark() -> Watermark {
        header.watermark(excluding: [])
    }
}

extension Metadata {
    /// A bound for a slot's next reservation, to leave in it when it goes idle: at or below any
    /// later cursor (a void resets the cursor to the allocated size, which never falls below
    /// it; a trim cuts at or above the cursor).
    var idleBound: UInt64 {
        min(Cursor.offset(cursor.load(ordering: .acquiring)), fileSize.load(ordering: .acquiring))
    }

    /// The slots that may hold state: those below the high-water mark, and the overflow slot.
    var activeSlots: [Int] {
        let high = min(Int(clamping: slotHighWater.load(ordering: .acquiring)), MetadataLayout.slotCount - 1)
        return Array(0..<high) + [MetadataLayout.slotCount - 1]
    }

    /// See `LogFile.deadHole`.
    func deadHole(state: UInt64, end: UInt64) -> Range<UInt64>? {
        guard state & (Slot.inFlight | Slot.exact) == Slot.inFlight | Slot.exact else { return nil }
        let start = Cursor.offset(state)
        // A reservation is one record long at most: anything else is not one (a corrupt or
        // hostile slot), and no hole (it would hide every later record from readers).
        guard end > start, end - start <= UInt64(MetadataLayout.maxRecordSize) else { return nil }
        // Cut back where a void took part of it (beyond the void points remembered: all of it).
        if let point = voidedAt(start: start, end: end, gen: Cursor.gen(state)) { return start < point ? start..<point : nil }
        // Not voided: then it lies below the cursor, or it is not a reservation either.
        guard end <= Cursor.offset(cursor.load(ordering: .acquiring)) else { return nil }
        return start..<end
    }

    /// If a void took back the reservation [start, end) of generation `gen`, the point it
    /// reset the cursor to; nil when the reservation stands. Writers ask under the grow lock.
    ///
    /// A void of generation g resets the cursor to the allocated size then, so a reservation
    /// of generation g - 1 survives it exactly when it ended at or below that point (it was
    /// allocated before the void). Void points are non-decreasing, so the first void after
    /// `gen` decides. When more voids have passed than `voidPoints` remembers, the
    /// reservation is taken as voided without a hole (its range then reads as zeros).
    func voidedAt(start: UInt64, end: UInt64, gen: UInt64) -> UInt64? {
        let now = Cursor.gen(cursor.load(ordering: .acquiring))
        if now == gen { return nil }
        let point = Cursor.genDistance(from: gen, to: now) <= UInt64(MetadataLayout.voidPointCount)
            ? voidPoint(gen &+ 1).load(ordering: .acquiring)  // pairs with the voider's release
            : 0
        return end > point ? point : nil
    }

    /// The hole of a writer that died between its fetch-add and publishing its range (in
    /// flight, not exact): its reservation lies at or above the slot's bound and nothing was
    /// copied into it, so it is the first run of zero bytes at or after the bound that is not
    /// already a hole: found by scanning the data, as Aeron's term unblocker finds a dead
    /// publisher's gap. Known only when that run ends below `limit`, below which everything is
    /// committed (nil otherwise: ask again when the watermark has moved), and at most a record
    /// long. Nil too when no zero byte lies between the bound and the limit (the writer died
    /// before its fetch-add: no hole). A binary log whose record holds zero bytes right there
    /// would lose them to the hole; a text log never holds any.
    ///
    /// `resume`: where an earlier scan of the same slot stopped (see `scanResumesAt`), so that a
    /// reader following the log does not read the same bytes again at every call.
    func unknownExtentHole(state: UInt64, dataFD: Int32, limit: UInt64, known: [Range<UInt64>],
                           resume: inout UInt64) -> Range<UInt64>? {
        guard state & (Slot.inFlight | Slot.exact) == Slot.inFlight else { return nil }
        var position = max(Cursor.offset(state), resume)
        guard position < limit else { return nil }
        let block = 1 << 16
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: block, alignment: 64)
        defer { buffer.deallocate() }
        var runStart: UInt64?
        // The first zero run decides: found (resume at its start, so a later scan finds it
        // again), longer than a record (no hole: never scan again), or reaching the limit
        // (resume at its start); no zero byte below the limit: resume there.
        func decide(_ start: UInt64, _ end: UInt64) -> Range<UInt64>? {
            if end - start <= UInt64(MetadataLayout.maxRecordSize) {
                resume = start
                return start..<end
            }
            resume = UInt64.max
            return nil
        }
        while position < limit {
            if let hole = known.first(where: { $0.contains(position) }) {
                if let start = runStart { return decide(start, position) }  // the run ends at a known hole
                position = hole.upperBound
                continue
            }
            let nextHole = known.first(where: { $0.lowerBound > position })?.lowerBound ?? UInt64.max
            let count = Int(min(UInt64(block), limit - position, nextHole - position))
            guard let n = try? Sys.preadFully(dataFD, UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), Int(position), ""),
                  n == count else { return nil }
            for k in 0..<count {
                let zero = buffer[k] == 0
                if runStart == nil && zero { runStart = position + UInt64(k) }
                if let start = runStart, !zero { return decide(start, position + UInt64(k)) }
            }
            position += UInt64(count)
            if let start = runStart, position - start > UInt64(MetadataLayout.maxRecordSize) { return decide(start, position) }
        }
        resume = runStart ?? limit
        return nil  // no zero byte yet, or the run reaches the limit: not known yet
    }

    /// Computes the committed watermark: min(cursor, allocated size, the begin of every
    /// in-flight slot not in `dead`). See `MetadataLayout` for why it is safe. The allocated
    /// size is loaded last: every reservation completed by the time the slots are read then
    /// ends at or below it, so the watermark falls on a record boundary (or inside a recorded
    /// hole) rather than inside a record that finished while the slots were read.
    func watermark(excluding dead: Set<DeadSlot>) -> Watermark {
        let word = cursor.load(ordering: .acquiring)  // first: see the proof in MetadataLayout
        var offset = Cursor.offset(word)
        // Sealed (a trim in progress): fetch-adds made meanwhile raised the offset and reserved
        // nothing; the cut point was stored before the seal (which this load acquired).
        if word & Cursor.sealBit != 0 { offset = min(offset, trimCursor.load(ordering: .relaxed)) }
        var blockers: [Watermark.Blocker] = []
        for i in activeSlots {
            let state = slotState(i).load(ordering: .acquiring)
            guard state & Slot.inFlight != 0 else { continue }
            let begin = Cursor.offset(state)
            if begin >= offset { continue }
            let claims = slotClaims(i).load(ordering: .relaxed)
            if dead.contains(DeadSlot(slot: i, state: state, claims: claims)) { continue }
            blockers.append(.init(slot: i, state: state, claims: claims))
        }
        for blocker in blockers { offset = min(offset, Cursor.offset(blocker.state)) }
        let size = fileSize.load(ordering: .acquiring)
        return Watermark(offset: min(offset, size), cursor: word, blockers: blockers)
    }
}

/// A computed watermark and what holds it below the cursor.
struct Watermark {
    struct Blocker {
        var slot: Int
        var state: UInt64
        var claims: UInt64
    }

    var offset: UInt64
    var cursor: UInt64
    /// In-flight slots below the cursor and allocated size.
    var blockers: [Blocker]
}

/// A slot seen in flight whose owner had died: the same slot, state and claim count.
struct DeadSlot: Hashable {
    var slot: Int
    var state: UInt64
    var claims: UInt64
}

// MARK: Threads

/// The slots one thread holds, for every handle it appended through. Kept in thread-specific
/// data; when the thread exits, each slot goes back to its handle's pool.
final class ThreadSlots {
    struct Entry {
        let handle: UInt64
        weak var file: LogFile?
        let fileID: UInt64
        let slot: Int
    }

    var entries: [Entry] = []

    deinit {
        for entry in entries { entry.file?.releaseSlot(entry.slot) }
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key) { raw in
            guard let raw else { return }
            Unmanaged<ThreadSlots>.fromOpaque(raw).release()
        }
        precondition(rc == 0, "pthread_key_create: \(rc)")
        return key
    }()

    /// The calling thread's set, created on first use.
    static var current: ThreadSlots {
        if let raw = pthread_getspecific(key) {
            return Unmanaged<ThreadSlots>.fromOpaque(raw).takeUnretainedValue()
        }
        let made = ThreadSlots()
        pthread_setspecific(key, Unmanaged.passRetained(made).toOpaque())
        return made
    }

    func find(handle: UInt64, file: LogFile) -> Int? {
        entries.first { $0.handle == handle && $0.fileID == file.id }?.slot
    }
}

extension MMLog {
    /// Gives the calling thread a slot in the current file and makes its hot entry serve this
    /// handle. False when every slot is taken (the caller appends through the overflow slot).
    func bindThread() throws(MMLogError) -> Bool {
        let file = current
        let threadSlots = ThreadSlots.current
        let slot: Int
        if let known = threadSlots.find(handle: id, file: file) {
            slot = known
        } else {
            try file.enterSlowPath("append", closed: closedFlag)
            defer { file.leaveSlowPath() }
            guard let claimed = try file.claimSlot() else { return false }
            threadSlots.entries.append(.init(handle: id, file: file, fileID: file.id, slot: claimed))
            slot = claimed
        }
        fill(mmlog_hot(), file: file, slot: slot)
        return true
    }

    /// Points a hot entry at `slot` of `file` through this handle.
    func fill(_ hot: UnsafeMutablePointer<mmlog_hot_t>, file: LogFile, slot: Int) {
        hot.pointee.owner = id
        hot.pointee.slot = file.header.slot(slot).assumingMemoryBound(to: UInt64.self)
        hot.pointee.cursor = (file.header.base + MetadataLayout.cursorOffset).assumingMemoryBound(to: UInt64.self)
        hot.pointee.file_size = (file.header.base + MetadataLayout.fileSizeOffset).assumingMemoryBound(to: UInt64.self)
        hot.pointee.ring_words = UnsafeMutableRawPointer(file.ring.words).assumingMemoryBound(to: UInt64.self)
        hot.pointee.ring_bases = UnsafeMutableRawPointer(file.ring.bases).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        hot.pointee.ring_mask = UInt64(file.ring.slotMask)
        hot.pointee.ring_stride = UInt64(ChunkRing.slotStride)
        hot.pointee.chunk_shift = UInt64(file.chunkShift)
        hot.pointee.chunk_mask = UInt64(file.chunkMask)
        hot.pointee.chunk_size = UInt64(file.chunkSize)
        hot.pointee.file = UnsafeMutableRawPointer(Unmanaged.passUnretained(file).toOpaque())
        hot.pointee.slot_index = UInt64(slot)
    }
}
