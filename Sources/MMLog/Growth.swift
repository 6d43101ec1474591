#if canImport(Glibc)
import Glibc
#endif
import Atomics

extension LogFile {
    /// What became of a reservation that had to wait for the file to grow.
    enum GrowOutcome {
        /// Its bytes are allocated: write them.
        case ready
        /// A full disk made another writer void it (see `MetadataLayout`): make it again.
        /// `idle` is a safe bound to leave in the writer's slot.
        case voided(idle: UInt64)
        /// Its bytes are allocated, and it is the record that crosses the rotation size:
        /// write it, then rotate with the file ending at its end (nil: at the cursor, when the
        /// file had grown past the size before the size was set).
        case readyThenRotate(at: UInt64?)
        /// It starts at or past the rotation size: it is not written in this file; rotate
        /// (see `sizeBoundary`) and make it again in the new log.
        case beyondRotation(size: UInt64)
        /// The file was retired, and this reservation lies past its end: make it again in
        /// the new log.
        case retired
    }

    /// Makes sure the data file is allocated up to `end` for the reservation [start, end) of
    /// generation `gen`, growing it (one process at a time) to the chunk boundary past `end`
    /// plus one more chunk, so other writers rarely wait.
    ///
    /// When the disk is full it voids every reservation above the allocated size, this one
    /// included, records the part of this one below it (if any) as a hole, and throws; `idle`
    /// is then set to the bound the writer must leave in its slot. A `probe` (preparing a
    /// chunk at open, no reservation) neither voids nor records anything.
    func grow(start: UInt64, end: UInt64, gen: UInt64, probe: Bool = false, idle: inout UInt64) throws(MMLogError) -> GrowOutcome {
        try withGrowLock { () throws(MMLogError) -> GrowOutcome in
            if !probe, let point = header.voidedAt(start: start, end: end, gen: gen) {
                if start < point { header.recordHole(start, point, dataFD: dataFD) }
                return .voided(idle: min(start, point))
            }
            let size = fileSize.load(ordering: .acquiring)
            if probe {
                // Preparing a chunk must never allocate past a rotation size (or past the record
                // that crossed it): appenders write on the fast path whatever is allocated, and
                // a record written past the retired end would be cut off with the file.
                let cap = header.rotateAtBytes.load(ordering: .relaxed)
                if cursor.load(ordering: .acquiring) & Cursor.retiredBit != 0
                    || (cap > 0 && (size >= cap || header.validCrossingEnd != 0)) {
                    return .ready
                }
            }
            if !probe && cursor.load(ordering: .acquiring) & Cursor.retiredBit != 0 && end > header.retiredAt.load(ordering: .acquiring) {
                // Reserved after the rotation's end was fixed (a size rotation another writer
                // made while this one waited here): it belongs in the new log.
                return .retired
            }
            // Rotation by size: never allocate past it, so every append that passes it comes here.
            let rotationSize = probe || cursor.load(ordering: .relaxed) & Cursor.retiredBit != 0
                ? 0 : header.rotateAtBytes.load(ordering: .relaxed)
            var crossing = false
            var rotateAfter: UInt64?? = .none
            if rotationSize > 0 && end > rotationSize {
                let crossed = header.validCrossingEnd
                // Exact while nothing was allocated past the size but the crossing record.
                if size <= rotationSize || (crossed != 0 && size <= crossed) {
                    if start >= rotationSize || (crossed != 0 && start >= crossed) {
                        return .beyondRotation(size: rotationSize)
                    }
                    // The one record that straddles the size: it ends this file.
                    if crossed == 0 { header.crossingEnd.store(end, ordering: .relaxed) }
                    crossing = true
                    rotateAfter = .some(end)
                } else {
                    // The file grew past the size before it was set: rotate at the cursor.
                    rotateAfter = .some(nil)
                }
                if end <= size { return .readyThenRotate(at: rotateAfter!) }
            }
            if end <= size { return .ready }
            do throws(MMLogError) {
                guard end <= MetadataLayout.maxLogSize else {
                    throw MMLogError.system("fallocate(\(path), \(size), \(end - size)): the log would pass \(MetadataLayout.maxLogSize) bytes", EFBIG)
                }
                let chunk = UInt64(chunkSize), mask = UInt64(chunkMask)
                var roomy = min(((end + mask) & ~mask) + chunk, MetadataLayout.maxLogSize)
                let cap = probe ? header.rotateAtBytes.load(ordering: .relaxed) : rotationSize
                if crossing {
                    roomy = end  // exactly: any later reservation must come here, not write past it
                } else if cap > 0 && size <= cap {
                    roomy = min(roomy, max(end, cap))
                }
                let target: UInt64
                do throws(MMLogError) {
                    try allocate(from: size, to: roomy)
                    target = roomy
                } catch where error.isNoSpace {
                    // Nearly full: try for just this record (to a page boundary) before giving up.
                    let page = UInt64(Sys.pageSize)
                    let tight = min((end + page - 1) / page * page, roomy)  // never past a rotation size either
                    try allocate(from: size, to: tight)
                    target = tight
                }
                fileSize.store(target, ordering: .releasing)  // pairs with appenders' acquiring loads
                if let rotateAfter { return .readyThenRotate(at: rotateAfter) }
                return .ready
            } catch {
                if !probe {
                    // When ours straddles the allocated end, void from its start, so no hole is
                    // left below the end. (Only ours: another straddler may die at any moment,
                    // and a reader that then passes it as dead has passed the allocated end.)
                    let point = min(start, size)
                    let ours = ownedSlots
                    let voided = header.voidReservations(above: point, dataFD: dataFD) { slotOwnerAlive($0, ours: ours) }
                    if !voided {
                        // Not given back now (see `voidReservations`): ours stays reserved and is
                        // never written, so it is a hole (clipped if a later void gives it back).
                        header.recordHole(start, end, dataFD: dataFD)
                    }
                    idle = min(start, point)
                }
                throw error
            }
        }
    }

    /// fallocate, or ftruncate where the filesystem cannot allocate. With ftruncate the
    /// blocks are allocated only when first written, so a full disk shows as SIGBUS at the
    /// store instead of an error from `append`.
    private func allocate(from size: UInt64, to target: UInt64) throws(MMLogError) {
        do throws(MMLogError) {
            try Sys.fallocate(dataFD, Int(size), Int(target - size), path)
        } catch where error.errno == EOPNOTSUPP || error.errno == ENOSYS {
            if try Sys.size(dataFD, path) < Int(target) {
                try Sys.ftruncate(dataFD, Int(target), path)
            }
        }
    }
}

extension Metadata {
    /// Resets the cursor to `point` (the allocated size) with a new generation, taking back
    /// every reservation above it: none of them was written (nothing is written above the
    /// allocated size), and every writer that holds one finds out under the grow lock, which
    /// the caller holds (or the caller is alone). Holes recorded above `point` are clipped.
    ///
    /// It does not void (and returns false) while a writer slot holds a reservation of the
    /// generation it would create (one that has waited through 2^14 voids: the generations
    /// would then be ambiguous), or a reservation whose void point it would overwrite in the
    /// ring of `voidPointCount` (one that has waited through that many voids, e.g. a thread
    /// descheduled while another fails again and again on a full disk) and whose owner is
    /// alive (`alive(slot)`). The reservations above `point` then stay until a later void; the
    /// caller records its own as a hole. A dead owner's reservation is settled instead: its
    /// hole recorded while its void point is still known, its slot left idle.
    @discardableResult
    func voidReservations(above point: UInt64, dataFD: Int32, alive: (Int) -> Bool = { _ in false }) -> Bool {
        // `point` is the allocated size, or the start of the one reservation that straddles it
        // (then every completed reservation still ends at or below it).
        var word = cursor.load(ordering: .acquiring)
        while Cursor.offset(word) > point {
            let gen = Cursor.genDistance(from: 0, to: Cursor.gen(word) &+ 1)
            if slotHoldsReservation(ofGeneration: gen) { return false }
            if !settleReservations(losingTheirVoidPointTo: gen, dataFD: dataFD, alive: alive) { return false }
            voidPoint(gen).store(point, ordering: .releasing)  // before the CAS that publishes gen
            recordClip(at: point)
            // The record that crossed the rotation size, if it ended above the point, is taken
            // back with the rest: its end must not outlive it (the next crossing record, made
            // again longer or shorter, would be cut at it, or the file retired past its end).
            if crossingEnd.load(ordering: .relaxed) > point { crossingEnd.store(0, ordering: .relaxed) }
            // In a retired file, records below the retired end may be taken back too (a rotation
            // from outside retired it at the cursor while one waited here): the file then ends at
            // the point (left above it, readers waited for ever for bytes no one would write).
            // Their writers reserve again, find the cursor retired, and move to the new log.
            if word & Cursor.retiredBit != 0 && retiredAt.load(ordering: .acquiring) > point {
                retiredAt.store(point, ordering: .releasing)
            }
            let (done, seen) = cursor.compareExchange(
                expected: word, desired: Cursor.make(offset: point, gen: gen, flags: word & Cursor.flagMask),
                ordering: .acquiringAndReleasing)
            if done { return true }
            word = seen
        }
        return true
    }

    /// Creating generation `gen` reuses the ring entry of the void point that a reservation
    /// more than `voidPointCount` generations old still needs (`voidedAt`). False when such a
    /// reservation's owner is alive; a dead owner's is recorded as a hole now and its slot
    /// left idle. The caller holds the grow lock (or is alone).
    private func settleReservations(losingTheirVoidPointTo gen: UInt64, dataFD: Int32, alive: (Int) -> Bool) -> Bool {
        for i in activeSlots {
            let state = slotState(i).load(ordering: .acquiring)
            guard state & (Slot.inFlight | Slot.exact) == Slot.inFlight | Slot.exact,
                  Cursor.genDistance(from: Cursor.gen(state), to: gen) > UInt64(MetadataLayout.voidPointCount) else { continue }
            if alive(i) { return false }
            if let hole = deadHole(state: state, end: slotEnd(i).load(ordering: .relaxed)) {
                recordHole(hole.lowerBound, hole.upperBound, dataFD: dataFD)
            }
            slotState(i).store(idleBound, ordering: .releasing)
        }
        return true
    }

    private func slotHoldsReservation(ofGeneration gen: UInt64) -> Bool {
        for i in activeSlots {
            let state = slotState(i).load(ordering: .acquiring)
            if state & (Slot.inFlight | Slot.exact) == Slot.inFlight | Slot.exact && Cursor.gen(state) == gen {
                return true
            }
        }
        return false
    }
}
