import Atomics
import Synchronization

/// A process-local, bounded set of mapped chunks of the data file, shared by a handle's threads.
///
/// Chunk `k` (file bytes `[k * chunkSize, (k+1) * chunkSize)`) lives in slot `k & slotMask`.
/// Each slot has one atomic word: the tag of the chunk it maps (`k + 1`; 0 empty). A writer
/// loads the word (one plain load: no read-modify-write, nothing stored) and copies through
/// the slot's mapping when the tag is its chunk's; a mismatch means "not mapped here", and it
/// takes the slow path.
///
/// Why a mapping is never unmapped while a writer copies into it: a writer copies only
/// within the reservation its writer slot shows in flight (step 3 of the protocol in
/// `MetadataLayout`: `state = start | inFlight | exact`, `end`), and it stores that state
/// before it loads the tag, with a compiler barrier between. The remapper (under `mapping`)
/// retags the slot first (`loadingTag`), then issues a process-wide barrier (membarrier), then
/// loads the state of every writer slot of its handle in the file (`watch`). The two sides are
/// Dekker's: the barrier makes the writer's store-then-load and the remapper's
/// store-barrier-load behave as if both were fenced, so either the writer's tag load saw
/// `loadingTag` (it copies nothing here), or the remapper's load of its slot returns that
/// step-3 state or a later one. A later one means the copy completed (step 4 is releasing, the
/// load acquiring) or a later reservation began, which loads the tag again (and sees
/// `loadingTag`). So when no watched slot shows a reservation in flight touching the evicted
/// chunk, no thread is copying into it, and none will. When one does, the remapper puts the
/// tag back and answers `.busy`: the caller writes with `pwrite` instead of waiting (a thread
/// of the handle in flight there may itself be waiting for `mapping`).
///
/// The ring used to pin with a fetch-add and unpin with a decrement around every copy (two
/// locked read-modify-writes per append on one cache line shared by every thread of the
/// process); the barrier moved that cost to the remap, once per chunk.
final class ChunkRing: @unchecked Sendable {
    // @unchecked: `bases` is plain memory ordered by the slot words (written before the
    // releasing publish of a tag, read after the acquiring load that saw that tag); the rest
    // is behind `mapping`.

    static let loadingTag: UInt64 = (1 << 40) - 1
    static let closedTag: UInt64 = (1 << 40) - 2
    // Tags cannot run into the special values: offsets stay below 2^48 (the header check) and
    // chunks are at least 4 KiB, so chunk indexes stay below 2^36.

    /// How many words apart slot words are: a cache line (a remap's stores do not disturb
    /// threads reading a neighbour).
    static let slotStride = 8

    let slotCount: Int
    let slotMask: Int
    let chunkSize: Int
    /// The slot words and mappings, also reached without the object from a thread's
    /// `mmlog_hot_t` (see `mapping(_:_:_:_:)`).
    let words: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    let bases: UnsafeMutablePointer<UnsafeMutableRawPointer?>

    private struct State {
        var closed = false
        /// Whether a thread of the owning handle has a reservation in flight touching chunk k
        /// (`watch`); nil until the ring is watched, and then it never evicts a chunk.
        var inFlight: (@Sendable (Int) -> Bool)?
    }

    /// Serialises remapping and closing; never taken on the fast path.
    private let mapping = Mutex<State>(State())

    enum Load { case mapped, busy }

    init(maxChunks: Int, chunkSize: Int) {
        var count = 1
        while count * 2 <= maxChunks { count *= 2 }
        slotCount = count
        slotMask = count - 1
        self.chunkSize = chunkSize
        words = .allocate(capacity: count * Self.slotStride)
        words.initialize(repeating: UnsafeAtomic<UInt64>.Storage(0), count: count * Self.slotStride)
        bases = .allocate(capacity: count)
        bases.initialize(repeating: nil, count: count)
    }

    deinit {
        words.deinitialize(count: slotCount * Self.slotStride)
        words.deallocate()
        bases.deallocate()
    }

    @inline(__always)
    private func word(_ slot: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: words + slot * Self.slotStride)
    }

    /// Gives the ring the test for copies in flight into a chunk (`LogFile.copyMayBeInFlight`)
    /// of the file it maps; until then it maps only into empty slots.
    func watch(_ inFlight: @escaping @Sendable (Int) -> Bool) {
        mapping.withLock { $0.inFlight = inFlight }
    }

    /// The mapping of chunk `k` (on a ring known by its arrays: the fast path's `mmlog_hot_t`),
    /// or nil when this slot maps another chunk. The caller's writer slot must already show
    /// the reservation it copies for, in flight (step 3), with a compiler barrier between that
    /// store and this call (see the type's comment).
    @inline(__always)
    static func mapping(_ words: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>,
                        _ bases: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ mask: UInt64, _ k: Int) -> UnsafeMutableRawPointer? {
        let slot = Int(truncatingIfNeeded: UInt64(truncatingIfNeeded: k) & mask)
        // Acquiring: pairs with the releasing publish in `load`, so `bases[slot]` is visible.
        let tag = UnsafeAtomic<UInt64>(at: words + slot &* slotStride).load(ordering: .acquiring)
        return tag == UInt64(truncatingIfNeeded: k &+ 1) ? bases[slot] : nil
    }

    /// Maps chunk `k` into its slot, evicting the chunk there unless a copy may be in flight
    /// into it, with `pages` (see `PageStrategy`). Returns `.busy` when it may (or when the ring
    /// is not watched yet). `allocatedEnd` is the data file's allocated size: only that much
    /// is prefaulted.
    func load(_ k: Int, fd: Int32, path: String, allocatedEnd: Int, pages: PageMode) throws(MMLogError) -> Load {
        let slot = k & slotMask
        let w = word(slot)
        return try mapping.withLock { (state: inout State) throws(MMLogError) -> Load in
            if state.closed { throw MMLogError(kind: .closed, operation: "append(\(path))", detail: "the log is closed") }
            let current = w.load(ordering: .relaxed)  // only changed under `mapping`
            if current == UInt64(k + 1) { return .mapped }
            if current != 0 {
                guard let inFlight = state.inFlight else { return .busy }
                w.store(Self.loadingTag, ordering: .relaxed)
                // The remapper's half of the barrier (the writer's is the compiler barrier in
                // `reserveAndCopy`); membarrier also fences this thread, so the store above is
                // before the loads in `inFlight`. Without membarrier (Linux before 4.3), a
                // scheduling period, as close does.
                if !Sys.processWideBarrier() { Sys.sleep(nanoseconds: 20_000_000) }
                if inFlight(Int(current) - 1) {
                    w.store(current, ordering: .releasing)  // the mapping is untouched
                    return .busy
                }
                if let old = bases[slot] {
                    Sys.unmap(old, chunkSize)
                    bases[slot] = nil
                }
            }
            w.store(Self.loadingTag, ordering: .relaxed)
            let offset = k * chunkSize
            let base: UnsafeMutableRawPointer
            do throws(MMLogError) {
                base = try Sys.mapShared(fd, chunkSize, offset, path, hugePages: pages.hugePages)
            } catch {
                w.store(0, ordering: .relaxed)
                throw error
            }
            let populate = min(chunkSize, allocatedEnd - offset)
            if populate > 0 { Sys.prefault(base, populate, pages.prefault) }
            bases[slot] = base
            w.store(UInt64(k + 1), ordering: .releasing)  // publish; pairs with `mapping`'s acquiring load
            return .mapped
        }
    }

    /// Unmaps every chunk; later lookups fail and `load` throws. The caller has quiesced the
    /// handle's threads in this file (`LogFile.detach`): none is in flight, and none can start
    /// a copy here (the handle is closed or the file's cursor retired, and both turn a new
    /// reservation away before it copies). The retag and barrier only make every later
    /// lookup fail.
    func close() {
        mapping.withLock { state in
            state.closed = true
            for slot in 0..<slotCount { word(slot).store(Self.closedTag, ordering: .relaxed) }
            if !Sys.processWideBarrier() { Sys.sleep(nanoseconds: 20_000_000) }
            for slot in 0..<slotCount {
                guard let base = bases[slot] else { continue }
                Sys.unmap(base, chunkSize)
                bases[slot] = nil
            }
            state.inFlight = nil  // drops the closure (and what it captured)
        }
    }

    /// Chunks currently mapped (for tests of the memory bound).
    var mappedCount: Int {
        mapping.withLock { _ in (0..<slotCount).filter { bases[$0] != nil }.count }
    }
}

extension LogFile {
    /// Whether one of this handle's writer slots in this file (or the overflow slot, which
    /// another process's thread may hold: then a needless `.busy`, never a wrong answer) shows
    /// a reservation in flight (step 3) touching chunk `k`: a copy into it may be under way.
    /// A slot still reserving (step 1) has not loaded a tag yet for its reservation.
    func copyMayBeInFlight(chunk k: Int) -> Bool {
        let low = UInt64(k) << UInt64(chunkShift), high = low + UInt64(chunkSize)
        var slots = ownedSlots
        slots.insert(LogFile.overflowSlot)
        for i in slots {
            // Acquiring: pairs with step 4's releasing store (the copy is then complete).
            let state = header.slotState(i).load(ordering: .acquiring)
            guard state & (Slot.inFlight | Slot.exact) == Slot.inFlight | Slot.exact else { continue }
            // Step 3 stores `end` before the state (releasing): this is its end or a later one.
            let end = header.slotEnd(i).load(ordering: .relaxed)
            if Cursor.offset(state) < high && end > low { return true }
        }
        return false
    }
}

#if canImport(Glibc)
import Glibc
#endif
