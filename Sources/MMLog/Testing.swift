import Atomics
import CMMLogShims

extension MMLog {
    /// For tests (package access): called by the writer of the record that crosses the
    /// rotation size, after writing it and before it rotates the file.
    nonisolated(unsafe) package static var testCrossedHook: (@Sendable () -> Void)?

    /// For tests (package access): called by a writer whose reservation passes the allocated
    /// end, before it takes the grow lock.
    nonisolated(unsafe) package static var testBeforeGrowHook: (@Sendable () -> Void)?

    /// For tests of dead writers (package access only): reserves `count` bytes exactly as an
    /// append does, through step 3 of the protocol (the exact range is published), and
    /// returns its offset without copying anything, leaving the calling thread's slot in
    /// flight, as a writer killed at that moment would. The caller is expected to exit.
    /// With `publish` false it stops one step earlier: after its fetch-add, before step 3,
    /// so the slot holds only its bound and the range is unknown.
    package func reserveAndAbandonForTesting(_ count: Int, publish: Bool = true) throws(MMLogError) -> Int {
        try checkUsable("append")
        if mmlog_hot().pointee.owner != id { _ = try bindThread() }
        let hot = mmlog_hot()
        let slot = UnsafeMutableRawPointer(hot.pointee.slot.unsafelyUnwrapped)
        let state = Metadata.slotWord(slot, Slot.stateOffset)
        state.store(state.load(ordering: .relaxed) | Slot.inFlight, ordering: .relaxed)
        let word = sharedWord(hot.pointee.cursor).loadThenWrappingIncrement(by: UInt64(count), ordering: .acquiringAndReleasing)
        let start = word & Cursor.offsetMask
        if !publish { return Int(start) }
        Metadata.slotWord(slot, Slot.endOffset).store(start + UInt64(count), ordering: .relaxed)
        state.store((word & (Cursor.offsetMask | Cursor.genMask)) | Slot.inFlight | Slot.exact, ordering: .releasing)
        return Int(start)
    }

    /// For tests (package access): called while a file is fenced off (`LogFile.fenceOff`), at
    /// the moment its shared header is replaced by a private copy, so that a test can widen
    /// that moment.
    nonisolated(unsafe) package static var testFenceHook: (@Sendable () -> Void)?

    /// For tests (package access): called by a trim with the cursor sealed, before it cuts the
    /// file, so that a test can widen that moment.
    nonisolated(unsafe) package static var testTrimHook: (@Sendable () -> Void)?
}
