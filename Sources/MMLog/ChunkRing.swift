import Atomics
import Synchronization

/// A process-local, bounded set of mapped chunks of the data file, shared by a handle's threads.
///
/// Chunk `k` (file bytes `[k * chunkSize, (k+1) * chunkSize)`) lives in slot `k & slotMask`.
/// Each slot has one atomic word: the tag of the chunk it maps (`k + 1`; 0 empty) in the high
/// 40 bits and a pin count in the low 24. A writer pins with one fetch-add and checks the tag;
/// a mismatch means "not mapped here", and it unpins and takes the slow path. A slot is
/// remapped only by a CAS from `(tag, 0 pins)`, so a mapping is never unmapped while a writer
/// copies into it; if the slot is pinned, the caller writes with `pwrite` instead of waiting.
final class ChunkRing: @unchecked Sendable {
    // @unchecked: `bases` is plain memory ordered by the slot words (written before the
    // releasing publish of a tag, read after the acquiring pin that saw that tag).

    static let pinBits: UInt64 = 24
    static let pinMask: UInt64 = (1 << pinBits) - 1
    static let loadingTag: UInt64 = (1 << 40) - 1
    static let closedTag: UInt64 = (1 << 40) - 2
    // Tags cannot run into the special values: offsets stay below 2^48 (the header check) and
    // chunks are at least 4 KiB, so chunk indexes stay below 2^36.

    /// How many words apart slot words are: a cache line (no false sharing between threads
    /// pinning neighbours).
    static let slotStride = 8

    let slotCount: Int
    let slotMask: Int
    let chunkSize: Int
    /// The slot words and mappings, also reached without the object from a thread's
    /// `mmlog_hot_t` (see `pin(_:_:)`).
    let words: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    let bases: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// Serialises remapping and closing; never taken on the fast path.
    private let mapping = Mutex<Bool>(false)  // true once closed

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

    /// Pins chunk `k` (on a ring known by its arrays: the fast path's `mmlog_hot_t`) and returns
    /// its mapping, or nil when this slot maps another chunk. Every non-nil result must be
    /// followed by `unpin`.
    @inline(__always)
    static func pin(_ words: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>,
                    _ bases: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ mask: UInt64, _ k: Int) -> UnsafeMutableRawPointer? {
        let slot = Int(truncatingIfNeeded: UInt64(truncatingIfNeeded: k) & mask)
        let w = UnsafeAtomic<UInt64>(at: words + slot &* slotStride)
        // Acquiring: pairs with the releasing publish in `load`, so `bases[slot]` is visible.
        let old = w.loadThenWrappingIncrement(ordering: .acquiring)
        if old &>> pinBits == UInt64(truncatingIfNeeded: k &+ 1) {
            return bases[slot]
        }
        w.wrappingDecrement(ordering: .relaxed)
        return nil
    }

    @inline(__always)
    static func unpin(_ words: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>, _ mask: UInt64, _ k: Int) {
        let slot = Int(truncatingIfNeeded: UInt64(truncatingIfNeeded: k) & mask)
        UnsafeAtomic<UInt64>(at: words + slot &* slotStride).wrappingDecrement(ordering: .releasing)
    }

    /// Maps chunk `k` into its slot, evicting the unpinned chunk there, with `pages` (see
    /// `PageStrategy`). Returns `.busy` when that slot's chunk is still pinned by another
    /// thread. `allocatedEnd` is the data file's allocated size: only that much is prefaulted.
    func load(_ k: Int, fd: Int32, path: String, allocatedEnd: Int, pages: PageMode) throws(MMLogError) -> Load {
        let slot = k & slotMask
        let w = word(slot)
        return try mapping.withLock { (closed: inout Bool) throws(MMLogError) -> Load in
            if closed { throw MMLogError(kind: .closed, operation: "append(\(path))", detail: "the log is closed") }
            let current = w.load(ordering: .acquiring)
            let tag = current >> Self.pinBits
            if tag == UInt64(k + 1) { return .mapped }
            if current & Self.pinMask != 0 { return .busy }
            let (claimed, _) = w.compareExchange(
                expected: current, desired: Self.loadingTag << Self.pinBits, ordering: .acquiring)
            if !claimed { return .busy }  // a stray pin is passing through; let the caller pwrite
            if tag != 0, let old = bases[slot] {
                Sys.unmap(old, chunkSize)
                bases[slot] = nil
            }
            let offset = k * chunkSize
            let base: UnsafeMutableRawPointer
            do throws(MMLogError) {
                base = try Sys.mapShared(fd, chunkSize, offset, path, hugePages: pages.hugePages)
            } catch {
                retag(w, from: Self.loadingTag, to: 0)
                throw error
            }
            let populate = min(chunkSize, allocatedEnd - offset)
            if populate > 0 { Sys.prefault(base, populate, pages.prefault) }
            bases[slot] = base
            retag(w, from: Self.loadingTag, to: UInt64(k + 1))  // publish
            return .mapped
        }
    }

    /// Changes a slot's tag, keeping any stray pins in the low bits. Releasing: publishes `bases`.
    private func retag(_ w: UnsafeAtomic<UInt64>, from old: UInt64, to new: UInt64) {
        w.wrappingIncrement(by: (new << Self.pinBits) &- (old << Self.pinBits), ordering: .releasing)
    }

    /// Unmaps every chunk, waiting for pinned copies to finish; later pins fail and `load` throws.
    func close() {
        mapping.withLock { closed in
            closed = true
            for slot in 0..<slotCount {
                let w = word(slot)
                while true {
                    let current = w.load(ordering: .acquiring)
                    if current & Self.pinMask == 0 {
                        let (done, _) = w.compareExchange(
                            expected: current, desired: Self.closedTag << Self.pinBits, ordering: .acquiring)
                        if done { break }
                    }
                    sched_yield()
                }
                if let base = bases[slot] {
                    Sys.unmap(base, chunkSize)
                    bases[slot] = nil
                }
            }
        }
    }

    /// Chunks currently mapped (for tests of the memory bound).
    var mappedCount: Int {
        mapping.withLock { _ in (0..<slotCount).filter { bases[$0] != nil }.count }
    }
}

#if canImport(Glibc)
import Glibc
#endif
