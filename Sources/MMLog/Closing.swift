#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CMMLogShims

extension MMLog {
    /// Truncates the data file to the end of the last record, when no other handle (in any
    /// process) is attached. Returns whether it truncated. Idempotent.
    ///
    /// With other handles attached it does nothing and returns false: truncating could pull
    /// pages from under their mappings. The last handle to close trims.
    @discardableResult
    public func trim() throws(MMLogError) -> Bool {
        try checkUsable("trim")
        let file = current
        try file.enterSlowPath("trim", closed: closedFlag)
        defer { file.leaveSlowPath() }
        return try file.trimIfAlone()
    }

    /// Detaches this handle. If no other handle is attached, trims the data file to the
    /// appended bytes first and marks the log closed cleanly. Idempotent; appends after it
    /// throw `.closed`. In a child process that inherited the handle across fork(), it only
    /// releases the child's copies (the parent's locks and mappings are untouched).
    public func close() throws(MMLogError) {
        if closedFlag.exchange(true, ordering: .sequentiallyConsistent) { return }
        if getpid() != ownerPID {
            for file in files.all(locking: false) { file.abandonInChild() }
            return
        }
        let files = self.files.all()
        // Every thread of this process now either sees the flag before it reserves, or has
        // its slot's in-flight bound visible to `quiesce` (the fast path stores the bound,
        // then loads the flag, with only a compiler barrier between).
        if !Sys.processWideBarrier() { Sys.sleep(nanoseconds: 20_000_000) }
        var firstError: MMLogError?
        for file in files where !file.fenced.load(ordering: .acquiring) {
            do throws(MMLogError) { try file.detach() } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
    }
}

extension LogFile {
    /// Trims when alone (see `MMLog.trim`). Serialised with growing by the grow lock.
    func trimIfAlone() throws(MMLogError) -> Bool {
        try withGrowLock { () throws(MMLogError) -> Bool in
            // Upgrade our shared attach lock; this fails while anyone else holds it.
            guard try locks.take(MetadataLayout.attachLockByte, F_WRLCK, wait: false, "attach")
            else { return false }
            defer { _ = try? locks.take(MetadataLayout.attachLockByte, F_RDLCK, wait: true, "attach") }
            try truncateToCursor()
            return true
        }
    }

    /// Truncates the data file to the cursor (or the allocated size, if reservations wait
    /// above it: truncation never extends the file, which would publish unallocated bytes).
    /// The caller holds the attach lock exclusively and the grow lock, so the only other
    /// appenders are this handle's threads. Sealing the cursor stops them reserving past the
    /// cut; those with earlier reservations write below it, where truncation does not reach.
    func truncateToCursor() throws(MMLogError) {
        trimming.store(true, ordering: .sequentiallyConsistent)
        defer { trimming.store(false, ordering: .releasing) }
        var word = cursor.load(ordering: .relaxed)
        while true {
            header.trimCursor.store(Cursor.offset(word), ordering: .relaxed)  // for recovery, should we die sealed
            let (sealed, seen) = cursor.compareExchange(expected: word, desired: word | Cursor.sealBit, ordering: .acquiringAndReleasing)
            if sealed { break }
            word = seen
        }
        // Unseal with an RMW, so the release sequence readers rely on is not broken.
        defer { _ = cursor.exchange(word, ordering: .releasing) }  // pairs with appenders' acquiring fetch-add
        MMLog.testTrimHook?()
        var point = min(Cursor.offset(word), fileSize.load(ordering: .acquiring))
        if word & Cursor.retiredBit != 0 { point = min(point, header.retiredAt.load(ordering: .acquiring)) }
        try Sys.ftruncate(dataFD, Int(point), path)
        fileSize.store(point, ordering: .releasing)
    }

    /// The last handle leaving a retired file (alone, holding the grow lock, trimmed): records
    /// the ranges of writers that died in flight as holes, fills every hole with spaces ending
    /// in a newline (so the file reads as plain text once its metadata is gone: a hole is a
    /// blank line to `cat`, `grep` and every shipper, never NUL bytes or half a record), flushes,
    /// and removes the metadata. Filled in place, not cut out: a reader may be reading the
    /// file by offset as it is finished.
    private func finishRetired() throws(MMLogError) {
        for i in header.activeSlots {
            let state = header.slotState(i).load(ordering: .acquiring)
            guard state & Slot.inFlight != 0 else { continue }
            if let hole = deadHole(slot: i, state: state) { header.recordHole(hole.lowerBound, hole.upperBound, dataFD: dataFD) }
        }
        let end = fileSize.load(ordering: .acquiring)
        for hole in header.recordedHoles() where hole.lowerBound < end {
            header.fillBlank(hole.lowerBound, min(hole.upperBound, end), dataFD: dataFD)
        }
        try Sys.fdatasync(dataFD, path)
        // The metadata is wherever the rotation (or logrotate, shifting names) put it.
        let own = try Sys.identity(metadataFD, metadataPath)
        if let current = Rotation.findMetadata(own, besides: path), let directory = try? LogDirectory(of: path) {
            directory.remove(LogDirectory.name(of: current))
        }
    }

    /// Closes this file for the handle: waits for its threads' appends in flight, unmaps its
    /// chunks, trims and marks it clean when no other handle is attached, fences the header
    /// off (so a straggling thread can touch nothing shared) and releases every lock.
    func detach() throws(MMLogError) {
        // Once: a thread leaving a retired file and close() may both come here for it (a
        // second pass used the descriptors the first had closed: EBADF at close).
        guard !detaching.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try quiesce()
        fenced.store(true, ordering: .sequentiallyConsistent)
        stopPrefetcher()
        try Sys.backOff(first: 1_000, cap: 1_000_000) { slowPaths.load(ordering: .sequentiallyConsistent) != 0 }
        ring.close()
        if let entry = handleEntry {
            header.handleEntry(entry).storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        }
        var trimError: MMLogError?
        let retired = cursor.load(ordering: .acquiring) & Cursor.retiredBit != 0
        var finished = false
        // Drop our shared lock, then try for the exclusive one: of several handles closing at
        // once, at least the last to try succeeds, so the file always ends trimmed.
        locks.release(MetadataLayout.attachLockByte)
        do throws(MMLogError) {
            if try locks.take(MetadataLayout.attachLockByte, F_WRLCK, wait: false, "attach") {
                try growLock.withLock { (_: inout Void) throws(MMLogError) in
                    try truncateToCursor()
                    header.clean.store(1, ordering: .relaxed)
                    if retired { try finishRetired() }  // which flushes the file
                    finished = true
                }
            }
        } catch {
            trimError = error
        }
        // This handle's records in a retired file reach the device before it leaves (a later
        // sync() covers only the current file), unless it finished the file itself.
        if retired && !finished { try? Sys.fdatasync(dataFD, path) }
        fenceOff()
        // The header no longer maps the file, and no chunk does: closing the descriptors
        // and the lock file drops every OFD lock this handle held (attach, data, slots, handle entry).
        mmlog_fork_guard_remove(dataFD)
        mmlog_fork_guard_remove(metadataFD)
        Sys.close(dataFD)
        Sys.close(metadataFD)
        Locks.closeFile(locks.fd)
        if let trimError { throw trimError }
    }

    /// Waits (sleeping) until no slot this handle owns in this file is in flight.
    private func quiesce() throws(MMLogError) {
        try Sys.backOff(first: 1_000, cap: 1_000_000) { !quiescent }
    }

    /// Replaces the shared header with private memory holding a copy of page 0 (so `endOffset`
    /// and the like still answer) with the cursor sealed and retired: a thread still pointing
    /// into it reaches the slow path, which finds the handle closed or moves it to the new log.
    /// The copy is made and flagged first and then moved over the header in one step: a
    /// thread of this handle idle in this file through a rotation (so not in flight, which is
    /// all `quiesce` waits for) may append at any moment, and must meet either the shared
    /// header (retired) or the flagged copy, never a zero cursor (it reserved at offset 0 and
    /// wrote over committed records of the file it left).
    func fenceOff() {
        let length = MetadataLayout.metadataSize
        let copy = mmlog_fence_copy(header.base, length, MetadataLayout.headerSize)
        if let copy, copy != UnsafeMutableRawPointer(bitPattern: -1) {
            let word = copy.advanced(by: MetadataLayout.cursorOffset).assumingMemoryBound(to: UInt64.self)
            word.pointee |= Cursor.flagMask
            MMLog.testFenceHook?()
            if mmlog_fence_replace(header.base, copy, length) == 0 {
                fenced.store(true, ordering: .releasing)
                return
            }
            _ = munmap(copy, length)
        }
        // No memory for a copy (ENOMEM, or the map count at its limit): the shared header stays
        // mapped. A straggler then meets the retired cursor or the closed handle there, as it
        // does anyway; zero pages, copied into afterwards, would show it a zero cursor.
        fenced.store(true, ordering: .releasing)
    }

    /// In a child after fork(): drops the child's copies of the descriptors and the header
    /// without touching a lock (OFD locks belong to the open file descriptions the parent
    /// shares; a process-local lock may have been held by a thread that did not fork). The
    /// child's copies of chunk mappings stay until it exits.
    func abandonInChild() {
        fenced.store(true, ordering: .relaxed)
        Sys.fenceOff(header.base, MetadataLayout.metadataSize)
        mmlog_fork_guard_remove(dataFD)
        mmlog_fork_guard_remove(metadataFD)
        Sys.close(dataFD)
        Sys.close(metadataFD)
        Locks.closeFile(locks.fd)
    }
}
