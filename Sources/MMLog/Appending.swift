#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CMMLogShims
import Synchronization

// The slow paths of `MMLog.append`: everything the fast path in MMLog.swift hands over.

extension MMLog {
    /// An append the fast path could not start: no slot yet for this thread, an empty or
    /// oversized record, a closed handle, a child after fork, a cursor sealed by a trim in
    /// this handle or retired by a rotation.
    @inline(never)
    func appendUnreserved(_ bytes: UnsafeRawBufferPointer) throws(MMLogError) -> Int {
        if bytes.count > MetadataLayout.maxRecordSize {
            throw MMLogError(kind: .recordTooLarge, operation: "append(\(path))",
                             detail: "a record of \(bytes.count) bytes; the largest is \(MetadataLayout.maxRecordSize)")
        }
        try checkUsable("append")
        if bytes.isEmpty { return endOffset }
        let hot = mmlog_hot()
        if hot.pointee.owner == id {
            // We have a slot and reserved nothing: the cursor carried a flag (or the file was
            // left, and its header fenced off).
            let file = Unmanaged<LogFile>.fromOpaque(hot.pointee.file!).takeUnretainedValue()
            if !file.fenced.load(ordering: .acquiring) { try waitWhileSealed(file) }
            if try moveOn(from: file) || file !== current {
                hot.pointee.owner = 0
                if !(try bindThread()) { return try appendThroughOverflowSlot(bytes) }
            }
            return try append(bytes)
        }
        if try bindThread() { return try append(bytes) }
        return try appendThroughOverflowSlot(bytes)
    }

    /// Throws when this handle may not append: closed, or inherited across fork().
    func checkUsable(_ operation: String) throws(MMLogError) {
        if getpid() != ownerPID {
            throw MMLogError(kind: .forked, operation: "\(operation)(\(path))",
                             detail: "this handle was opened by process \(ownerPID) and inherited across fork(); open the log again in process \(getpid())")
        }
        if closedFlag.load(ordering: .relaxed) {
            throw MMLogError(kind: .closed, operation: "\(operation)(\(path))", detail: "the log is closed")
        }
    }

    /// A trim in this handle sealed the cursor: wait (sleeping, not spinning) until it
    /// unseals, then reserve again. No other process can trim while this handle is attached,
    /// so a cursor sealed while no trim of this handle runs was changed under the writers
    /// (a hostile or corrupt header): an error, not a wait for ever.
    private func waitWhileSealed(_ file: LogFile) throws(MMLogError) {
        var unexplained = 0
        try Sys.backOff(first: 1_000, cap: 1_000_000) { () throws(MMLogError) -> Bool in
            guard file.cursor.load(ordering: .acquiring) & Cursor.sealBit != 0 && !file.fenced.load(ordering: .acquiring) else { return false }
            try checkUsable("append")
            unexplained = file.trimming.load(ordering: .sequentiallyConsistent) ? 0 : unexplained + 1
            if unexplained > 200 {  // about 0.2 s sealed with no trim of ours running
                throw MMLogError(kind: .corruptMetadata, operation: "append(\(path))",
                                 detail: "\(file.metadataPath): the cursor is sealed, but no trim of this process is running and none of another can while it is attached: the header was changed under the writers")
            }
            return true
        }
    }

    /// The reservation the fast path made (recorded in the thread's slot, step 3) needs more
    /// than a copy: the file must grow, a chunk is not mapped here (or its ring slot is busy),
    /// or the record is large enough for pwrite. A reservation voided meanwhile (a full disk)
    /// is made again.
    @inline(never)
    func finishReservedOrRetry(_ hot: UnsafeMutablePointer<mmlog_hot_t>, _ bytes: UnsafeRawBufferPointer) throws(MMLogError) -> Int {
        if let offset = try finishReserved(hot, bytes) { return offset }
        return try append(bytes)
    }

    /// A reservation at or past the rotation size: leave it unwritten, rotate the file at the
    /// end of the record that straddles the size (waiting, sleeping, for that record's writer
    /// to get there, unless it died), and move on; the caller makes it again in the new log.
    private func rotateBySize(_ file: LogFile, size: UInt64) throws(MMLogError) {
        try Sys.backOff(first: 100_000, cap: 10_000_000) { () throws(MMLogError) -> Bool in
            guard file.cursor.load(ordering: .acquiring) & Cursor.retiredBit == 0 else { return false }
            if let boundary = file.sizeBoundary(size) {
                _ = try file.rotate(retiredAt: boundary, keep: options.keepRotated)
                return false
            }
            try checkUsable("append")
            return true
        }
        _ = try moveOn(from: file)
    }

    /// Completes the reservation in `hot`'s slot; nil when a void took it back (the slot is
    /// then idle and the caller reserves again).
    func finishReserved(_ hot: UnsafeMutablePointer<mmlog_hot_t>, _ bytes: UnsafeRawBufferPointer) throws(MMLogError) -> Int? {
        let file = Unmanaged<LogFile>.fromOpaque(hot.pointee.file!).takeUnretainedValue()
        let slot = UnsafeMutableRawPointer(hot.pointee.slot!)
        let state = Metadata.slotWord(slot, Slot.stateOffset)
        let word = state.load(ordering: .relaxed)
        let start = Cursor.offset(word), gen = Cursor.gen(word)
        let end = Metadata.slotWord(slot, Slot.endOffset).load(ordering: .relaxed)
        var idle = start
        var rotateAt: UInt64?? = .none
        do throws(MMLogError) {
            let rotationSize = file.header.rotateAtBytes.load(ordering: .relaxed)
            if end > file.fileSize.load(ordering: .acquiring) || (rotationSize != 0 && end > rotationSize)
                || file.cursor.load(ordering: .acquiring) & Cursor.retiredBit != 0 {
                MMLog.testBeforeGrowHook?()
                switch try file.grow(start: start, end: end, gen: gen, idle: &idle) {
                case .ready: break
                case .readyThenRotate(let boundary): rotateAt = .some(boundary)
                case .voided(let bound):
                    state.store(bound, ordering: .releasing)
                    return nil
                case .beyondRotation(let size):
                    state.store(start, ordering: .releasing)  // never written here: past the retired end
                    try rotateBySize(file, size: size)
                    return nil
                case .retired:
                    state.store(start, ordering: .releasing)
                    _ = try moveOn(from: file)
                    return nil
                }
            }
            try file.write(bytes, at: start, end: end, hot: hot, through: self)
            state.store(end, ordering: .releasing)  // pairs with readers' acquiring slot loads
        } catch {
            state.store(idle, ordering: .releasing)
            throw error
        }
        if let rotateAt {
            MMLog.testCrossedHook?()
            // Our record ends this file. The append has succeeded whatever happens now; should
            // this rotation fail, a writer past the size or the next open finishes it.
            _ = try? file.rotate(retiredAt: rotateAt, keep: options.keepRotated)
            _ = try? moveOn(from: file)
        }
        return Int(start)
    }

    /// Appends through the shared overflow slot, taking turns under its lock: for threads
    /// that found every slot taken.
    private func appendThroughOverflowSlot(_ bytes: UnsafeRawBufferPointer) throws(MMLogError) -> Int {
        let file = current
        try file.enterSlowPath("append", closed: closedFlag)
        defer { file.leaveSlowPath() }
        let offset = try file.overflow.withLock { (_: inout Void) throws(MMLogError) -> Int? in
            let byte = MetadataLayout.slotLockBase + LogFile.overflowSlot
            try file.locks.take(byte, F_WRLCK, wait: true, "overflow slot")
            defer { file.locks.release(byte) }
            var entry = mmlog_hot_t()
            fill(&entry, file: file, slot: LogFile.overflowSlot)
            return try withUnsafeMutablePointer(to: &entry) { (hot) throws(MMLogError) -> Int? in
                // Its last user may have died in flight: record that hole before reusing the slot.
                if try file.recordDeadOwnersHole(slot: LogFile.overflowSlot) {
                    file.header.slotState(LogFile.overflowSlot).store(file.header.idleBound, ordering: .releasing)
                }
                while true {
                    let result = reserveAndCopy(hot, bytes)
                    if result >= 0 { return result }
                    if result != Self.reserved { return nil }  // closed, sealed or retired: retry outside
                    if let offset = try finishReserved(hot, bytes) { return offset }
                }
            }
        }
        if let offset { return offset }
        return try append(bytes)
    }
}

extension LogFile {
    /// Writes a reserved, allocated range: through this handle's mappings when the record
    /// spans at most two chunks and is below the pwrite threshold, otherwise (or when a ring
    /// slot is held by a slower thread, or mapping fails) with one pwrite. A failed write
    /// leaves a hole, recorded before the error is thrown.
    func write(_ bytes: UnsafeRawBufferPointer, at start: UInt64, end: UInt64,
               hot: UnsafeMutablePointer<mmlog_hot_t>, through log: MMLog) throws(MMLogError) {
        let first = Int(start >> UInt64(chunkShift)), last = Int((end - 1) >> UInt64(chunkShift))
        if last <= first + 1 && bytes.count < log.pwriteAt {
            let mapped = (try? map(chunks: first...last)) ?? false
            if mapped && log.copyThroughMappings(hot, bytes, at: Int(start)) { return }
        }
        do throws(MMLogError) {
            try Sys.pwriteAll(dataFD, bytes, Int(start), path)
        } catch {
            try? withGrowLock { () throws(MMLogError) in header.recordHole(start, end, dataFD: dataFD) }
            throw error
        }
    }
}
