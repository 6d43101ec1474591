#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CMMLogShims
import Synchronization

// Durability: `sync()` as a group commit across threads and processes.
//
// The header keeps a flush sequence (`flushStarted`, `flushDone`) and a durable watermark
// (`durable`). A caller needs a flush that *starts after its call*: any such flush writes
// every dirty page of the data file, its own records among them. One caller at a time is the
// flusher (the flush lock byte, released by the kernel if it dies, and this handle's
// `flushLock` for its threads); it numbers its flush, computes the committed watermark,
// calls fdatasync, then publishes the new durable watermark and the flush's number and wakes
// the waiters (a futex on `flushDone`, which lives in the shared mapping, so it works across
// processes). The others sleep on that futex until a flush that started after their call
// has ended, or until the durable watermark passes their own records; they wake every 10 ms
// to take the flusher's role over should the flusher have died.
//
// Batching (after jbd2's, whose syncing handle sleeps for about one commit time when the last
// sync came from another process, while others join the transaction): N processes each
// appending and syncing in turn would otherwise split into two groups that alternate, one
// flushing while the other appends (about N/2 records per flush: 2.3 at 4 processes). So a
// flusher, before it numbers its flush and takes the watermark, waits for the callers about to
// join: it yields while sync() calls keep arriving no more than a quarter of a flush apart, for
// at most one flush's duration (this process's last fdatasync; never above 2 ms), and stops
// once as many have arrived as were waiting when its process's last flush ended. It does not
// wait when nobody was waiting at the end of this process's last flush (a lone writer, to
// which a wait would only add latency). Callers that arrive meanwhile read the flush number
// before it is bumped, so this flush counts for them. The two figures are per process (a
// process syncing several logs shares them: a wrong guess costs one wait, never durability).
//
// Memory order: the flusher's releasing store of `flushDone` publishes `durable` (stored
// before it) to the acquiring load in a waiter. `flushStarted` is only written under the
// flush lock; a caller reads it before it checks anything, so a flush numbered above the
// value it read began after its call.

extension MMLog {
    /// Makes appends durable: when it returns, every record the calling thread appended
    /// through this handle before the call is on the device, and so is every byte below
    /// `durableOffset` (everything committed, by any thread or process, when the covering
    /// flush began). Concurrent calls from many threads and processes share device flushes:
    /// one flushes for all whose records it covers; the others wait without spinning. A
    /// caller whose records are already below the durable watermark returns at once, with no
    /// system call.
    public func sync() throws(MMLogError) {
        try checkUsable("sync")
        // Records this handle appended to a file rotated away that it has not left yet (one
        // of its threads is still in flight there): no group commit of the new log covers
        // them, so that file is flushed here (rare: only between a rotation and the leaving).
        for retired in files.retired() where !retired.fenced.load(ordering: .acquiring) {
            guard (try? retired.enterSlowPath("sync", closed: closedFlag)) != nil else { continue }
            defer { retired.leaveSlowPath() }
            try Sys.fdatasync(retired.dataFD, retired.path)
        }
        let file = current
        try file.enterSlowPath("sync", closed: closedFlag)
        defer { file.leaveSlowPath() }
        let hot = mmlog_hot()
        let target: UInt64? = hot.pointee.owner == id && hot.pointee.file == Unmanaged.passUnretained(file).toOpaque()
            ? Metadata.slotWord(UnsafeMutableRawPointer(hot.pointee.slot.unsafelyUnwrapped), Slot.stateOffset).load(ordering: .relaxed)
            : nil
        try file.groupCommit(ownEnd: target)
    }

    /// Every byte below this offset has reached the device (as of the last flush).
    public var durableOffset: Int { Int(clamping: current.header.durable.load(ordering: .acquiring)) }

    /// Device flushes made for `sync()` so far, by every process (for tests and `mmlog stat`).
    public var flushCount: Int { Int(clamping: current.header.flushes.load(ordering: .relaxed)) }

    /// For tests (package access): the flush sequence, (flushes begun, flushes ended), and the
    /// end of the calling thread's last append through this handle.
    package var flushSequenceForTesting: (started: UInt64, done: UInt32) {
        let header = current.header
        return (header.flushStarted.load(ordering: .acquiring), header.flushDone.load(ordering: .acquiring))
    }
}

extension MMLog {
    /// For tests (package access): called by the flusher after it numbers its flush and before
    /// fdatasync, so that a test can kill a process inside a flush.
    nonisolated(unsafe) package static var testFlushHook: (@Sendable () -> Void)?
}

extension LogFile {
    /// How long a sync() caller sleeps between checks that the flusher is alive.
    static let flushWaitNanoseconds: Int64 = 10_000_000

    /// See the comment at the top of this file. `ownEnd`: the end of the caller's last append
    /// (nil when it has none through this handle: then only a flush started after the call
    /// will do).
    func groupCommit(ownEnd: UInt64?) throws(MMLogError) {
        header.syncCalls.wrappingIncrement(ordering: .relaxed)
        let calledAt = header.flushStarted.load(ordering: .acquiring)
        func satisfied() -> Bool {
            if let ownEnd, ownEnd & Slot.inFlight == 0, header.durable.load(ordering: .acquiring) >= Cursor.offset(ownEnd) {
                return true
            }
            let done = header.flushDone.load(ordering: .acquiring)
            return Int32(bitPattern: done &- UInt32(truncatingIfNeeded: calledAt &+ 1)) >= 0
        }
        while !satisfied() {
            if try flushIfNobodyIs() { continue }
            // Someone is flushing: sleep until it ends (or 10 ms pass: it may have died). Count
            // ourselves a waiter before reading the word (sequentially consistent with the
            // flusher's store-then-check), so either it wakes us or we see its flush end.
            header.flushWaiters.wrappingIncrement(ordering: .sequentiallyConsistent)
            let seen = header.flushDone.load(ordering: .sequentiallyConsistent)
            if !satisfied() {
                let word = UnsafeMutableRawPointer(header.base + MetadataLayout.flushDoneOffset).assumingMemoryBound(to: UInt32.self)
                _ = mmlog_futex_wait(word, seen, Self.flushWaitNanoseconds)
            }
            header.flushWaiters.wrappingDecrement(ordering: .relaxed)
        }
    }

    /// Flushes if no one else (in any process) is flushing; returns whether it did. First waits
    /// for the callers expected to join the flush (see the top of this file).
    private func flushIfNobodyIs() throws(MMLogError) -> Bool {
        guard let flushed = try flushLock.withLockIfAvailable({ (_: inout Void) throws(MMLogError) -> Bool in
            guard try locks.take(MetadataLayout.flushLockByte, F_WRLCK, wait: false, "flush") else {
                return false
            }
            defer { locks.release(MetadataLayout.flushLockByte) }
            gather()
            let number = header.flushStarted.load(ordering: .relaxed) &+ 1
            header.flushStarted.store(number, ordering: .releasing)
            MMLog.testFlushHook?()
            // Everything committed now is in the page cache; fdatasync writes it all.
            let covered = watermark().offset
            let flushStart = Sys.monotonicNanoseconds()
            try Sys.fdatasync(dataFD, path)
            GroupCommit.lastFlushNanoseconds.store(Sys.monotonicNanoseconds() &- flushStart, ordering: .relaxed)
            GroupCommit.expectedJoiners.store(header.flushWaiters.load(ordering: .relaxed), ordering: .relaxed)
            // Holes recorded since this handle last flushed the metadata reach the disk before
            // a durable watermark past them can (after a crash, recovery keeps the holes of the
            // header on disk below its durable watermark: a hole missing there is zeros read
            // as records). Only when holes changed: a log without failures never pays for it.
            let holes = (header.holeCount.load(ordering: .relaxed), header.holeReach.load(ordering: .relaxed))
            if holes != metadataFlushedHoles {
                try Sys.fdatasync(metadataFD, metadataPath)
                metadataFlushedHoles = holes
            }
            header.flushes.wrappingIncrement(ordering: .relaxed)
            if covered > header.durable.load(ordering: .relaxed) {
                header.durable.store(covered, ordering: .relaxed)
            }
            header.flushDone.store(UInt32(truncatingIfNeeded: number), ordering: .sequentiallyConsistent)  // publishes durable
            return true
        }) else { return false }
        if flushed && header.flushWaiters.load(ordering: .sequentiallyConsistent) > 0 {
            _ = mmlog_futex_wake_all(UnsafeMutableRawPointer(header.base + MetadataLayout.flushDoneOffset).assumingMemoryBound(to: UInt32.self))
        }
        return flushed
    }

    /// Yields while callers keep arriving (sync() calls no more than a quarter of a flush
    /// apart), for at most one flush's duration, and no longer once as many have arrived as
    /// waited at the end of this process's last flush (all the others, in a steady state); not
    /// at all when nobody was waiting then (a lone writer).
    private func gather() {
        let expected = UInt64(GroupCommit.expectedJoiners.load(ordering: .relaxed))
        guard expected > 0 else { return }
        let bound = min(GroupCommit.lastFlushNanoseconds.load(ordering: .relaxed), GroupCommit.maxGatherNanoseconds)
        let gap = bound / 4
        let start = Sys.monotonicNanoseconds()
        let first = header.syncCalls.load(ordering: .relaxed)
        var calls = first, lastArrival = start, now = start
        while now &- start < bound && now &- lastArrival < gap && calls &- first < expected {
            sched_yield()
            now = Sys.monotonicNanoseconds()
            let seen = header.syncCalls.load(ordering: .relaxed)
            if seen != calls { calls = seen; lastArrival = now }
        }
    }
}

/// The process's state for batching flushes (see the top of this file).
enum GroupCommit {
    /// How long this process's last fdatasync for a group commit took.
    static let lastFlushNanoseconds = Atomic<UInt64>(0)
    /// How many callers were waiting when this process's last flush ended: in a steady state
    /// of syncing processes, all but the flusher; 0 for a lone one.
    static let expectedJoiners = Atomic<UInt32>(0)
    /// The longest a flusher waits for others to join (however slow the device).
    static let maxGatherNanoseconds: UInt64 = 2_000_000
}
