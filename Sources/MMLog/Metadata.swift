#if canImport(Glibc)
import Glibc
#endif
import Atomics

/// The metadata file `<path>.mmlog`, format version 3: the one place that declares the shared
/// layout, who writes each field, and the memory order of every access.
///
/// The file is `metadataSize` bytes, mapped `MAP_SHARED` by every writer (read-write) and every
/// reader (read-only). Integers are in the machine's byte order; the magic number catches a file
/// written with the other byte order. Each field that changes after creation sits on a cache
/// line with fields written at the same moments, so the hot cursor evicts nothing else.
///
/// ```
/// page 0: the header
/// offset size field          written by                               memory order
///      0    8 magic          creator / upgrader, before state = ready  plain; published by state
///      8    4 version (3)    creator                                   plain
///     12    4 headerSize     creator (4096: page 0)                    plain
///     16    4 pageSize       creator                                   plain
///     20    4 slotCount      creator (the last slot is the overflow)   plain
///     24    8 chunkSize      creator                                   plain
///     32    4 holeCapacity   creator                                   plain
///     36    4 metadataSize   creator                                   plain
///     64    8 state          creator: 0 -> ready                       releasing store / acquiring load
///     72    8 trimCursor     trimmer, before sealing the cursor        plain (read by recovery, under locks)
///     80    8 clean          1: the last handle closed and trimmed;    plain, under the init lock
///                            0: attached, or a crash left it
///     88    8 dataDevice     st_dev of the data file  } its identity:  plain, under the init lock,
///     96    8 dataInode      st_ino of the data file  } checked at     by an opener alone
///    104   16 bootID         /proc/sys/kernel/random/boot_id } open
///    120    4 recoveries     count of recoveries run (for stat)        plain, under the init lock
///    128    8 fileSize       grower (grow lock), trimmer, recovery     releasing store / acquiring load
///    136    8 lockRegion     creator / upgrader: this log's region of   plain, before state = ready
///                            the lock file (see `Locks`)
///    144   16 (reserved: zero; once grow hints, read by nothing)
///    192    8 cursor         every append: fetch-add (see `Cursor`)    acquiring-and-releasing RMW;
///                                                                      every other change an RMW too
///    256    8 durable        flusher: all below it is on the device    releasing store / acquiring load
///    264    8 flushStarted   flusher (flush lock): flushes begun       releasing store / acquiring load
///    272    4 flushDone      flusher: flushes ended (a futex word)     releasing store / acquiring load
///    276    4 flushWaiters   sync callers asleep on flushDone          relaxed RMW (a hint for wake)
///    280    8 flushes        flusher: device flushes made (for stat)   relaxed RMW
///    288    8 syncCalls      every sync() call                         relaxed RMW
///    320    8 holeCount      hole recorder (grow lock)                 releasing store / acquiring load
///    328    8 holesDropped   hole recorder: holes past the capacity    relaxed
///    336    8 holeReach      hole recorder: the end of the furthest    plain, under the grow lock
///                            hole (voids below it record a clip)
///    344    8 slotHighWater  slot claimers: 1 + the highest claimed    relaxed RMW (max); readers scan
///                                                                      below it
///    384  512 voidPoints     voider (grow lock): 64 entries, entry     releasing store (before the
///                            g % 64 = the offset the void that made     cursor CAS that publishes g) /
///                            generation g reset the cursor to           acquiring load
///    896    8 retiredAt      rotator: end of the log when retired      releasing store / acquiring load
///    904    8 rotations      rotator: how many times this path rotated plain, under the rotate lock
///    912    8 rotateAtBytes  creator (or the first handle with the      relaxed (0: never)
///                            option): the size that triggers rotation
///    920    8 crossingEnd    grower (grow lock): the end of the record relaxed, under the grow lock;
///                            that crosses rotateAtBytes               readers: under the rotate lock
///    928    4 lockNameLength creator / upgrader: the lock file's name   plain, before state = ready
///    932   92 lockName       (`<name>.mmlog-lock`, beside the log)
///   1024    4 retiredNameLength  rotator (rotate lock): the name the  plain, under the rotate lock,
///   1028 1000 retiredName        data file is retired under           before the retired bit is set
///   2048 2048 handles        128 x 16 bytes: pid (4), in use (4),      plain, by the handle that
///                            opened at (8, CLOCK_REALTIME seconds)     holds the entry's lock byte
///
/// page 1 on: the writer table, slotCount x 128 bytes (see `Slot`)
/// then: the hole table, holeCapacity x 16 bytes: (start, end); end == 0 marks a clip: every
///       earlier hole is cut back to below `start` (a void gave that range back)
/// ```
///
/// Locks: OFD locks on single bytes of the lock file `<path>.mmlog-lock` (version 3; see
/// `Locks`: only writers can open it, so no reader can stall a writer), released by the kernel
/// when their holder dies (so no dead process can wedge the others). Byte 0 of the lock file
/// (`creationLockByte`) is the path's: held while a header is made. The others are this
/// header's, at `lockRegion` + the byte:
/// - byte 0 (`initLockByte`): opening and recovery, exclusive;
/// - byte 1 (`attachLockByte`): shared by every open handle; exclusive means no other handle
///   is attached: the condition for trimming, recovery and upgrading;
/// - byte 2 (`growLockByte`): growing the data file, voiding, recording holes, exclusive;
/// - byte 3 (`flushLockByte`): the flusher of a group commit, exclusive;
/// - byte 4 (`rotateLockByte`): a rotation in progress, exclusive;
/// - bytes `handleLockBase + i`: the handle that uses handle entry i, exclusive;
/// - bytes `slotLockBase + i`: the owner of writer slot i, exclusive.
/// Every handle also holds a shared lock on its data file's byte, `dataLockBase` + its inode:
/// fresh metadata is written for an existing data file only when that lock can be taken
/// exclusively, so two metadata files never drive one data file. Versions 1 and 2 kept the
/// per-log bytes in the metadata file itself and the data byte at byte 0 of the data file; a
/// version 3 opener converts such a header in place when it is alone under those old locks
/// (an old writer attached: refused), and old writers refuse version 3.
///
/// ## The committed watermark
///
/// The cursor says what is *reserved*; the watermark says what is *written*: every byte below
/// it belongs to a reservation whose copy has completed (or to a recorded hole). Any process
/// computes it from the mapped file, at any moment, without a lock:
///
///     committed = min(cursor, fileSize, begin of every live in-flight slot)
///
/// A writer slot (one per appending thread, found once per thread and then used with plain
/// stores) holds its thread's reservation in flight:
/// 1. before the fetch-add: `state = lastEnd | inFlight` (relaxed). `lastEnd`, the end of the
///    thread's last completed reservation, is a lower bound of the start it is about to get,
///    because the cursor never falls below the end of a completed reservation (a give-back
///    removes only the newest reservation while it is in flight; a void resets the cursor to
///    the allocated size, which is at or above every completed reservation).
/// 2. the fetch-add on the cursor, acquiring-and-releasing: its release orders step 1 before it.
/// 3. `end = start + count` (relaxed), then `state = start | gen | inFlight | exact` (releasing):
///    the hole's extent, should the thread die copying.
/// 4. the copy, then `state = end` (releasing): the copy happens-before any acquiring load that
///    sees the slot idle.
///
/// Why a reader never sees an unwritten byte below the watermark: the reader loads the cursor
/// (acquiring), then each slot (acquiring), then `fileSize` (last, so that a reservation that
/// completed while the slots were read ends below it: the watermark then falls on a record
/// boundary, or inside a recorded hole). Take any reservation R = [s, e) by thread T with
/// s < the cursor value C the reader loaded. C is the result of R's fetch-add or of an RMW
/// after it (every change of the cursor is an RMW, so they all continue R's release sequence),
/// so the reader synchronizes with R's fetch-add and T's step-1 store happens-before the
/// reader's load of T's slot. That load therefore returns step 1's value or a later one: step
/// 3's (in flight, begin = s), step 4's (R complete, its copy visible to the reader), or a later
/// reservation's (which T starts only after completing R). So either R is complete, or the
/// reader saw T in flight with begin <= s and the watermark is at most s. A reservation with
/// s >= C lies above the watermark (<= C). Hence every byte below the watermark is final. The
/// watermark may move backwards between two computations (a thread's bound is its *previous*
/// end); every value is valid, so readers keep the maximum they have seen.
///
/// Dead writers: a slot's owner holds the slot's lock byte. A reader whose watermark has not
/// moved for a while probes the lock of each in-flight slot holding it back (F_OFD_GETLK);
/// when it is free and the slot still shows the same reservation, the owner died in flight:
/// an exact slot's [start, end) is a hole (zeros, or a torn record) that readers skip. A
/// slot still at step 1 died before it copied anything: if its fetch-add happened, its range
/// is all zeros, at or above the slot's bound, with committed records all around it below the
/// watermark that passes it; so it is the first zero run past the bound, found by reading
/// the data (`unknownExtentHole`, as Aeron's unblocker finds a dead publisher's gap). The
/// next writer to claim the slot (or a recovery) records the hole in the hole table and
/// resets the slot.
///
/// Writers beyond the allocated end: the watermark never passes `fileSize`, and nothing is
/// written above it. When the disk is full, a grower that cannot allocate *voids* every
/// reservation above `fileSize`: it resets the cursor to `fileSize` (or to the start of its own
/// reservation, when that straddles `fileSize` and so is in flight below every reader's
/// watermark) and bumps the generation
/// in the cursor's high bits (`Cursor`), after storing the void point in `voidPoints`. Writers
/// load `fileSize` before their fetch-add, so a reservation that passed that value goes through
/// the grow lock, where it compares its generation: a voided reservation is made again (the
/// part of one that straddled the void point, if any, is recorded as a hole). So failed
/// appends never accumulate in the file. They load it again after the fetch-add and copy only
/// below both values: a trim makes `fileSize` smaller (it cuts at the cursor), and a value
/// loaded before a trim would let a reservation made after it write past the new end of file,
/// into the page cache of a page the next growth zeroes (a record lost: 1 run in ~3 of the
/// trim-racing test). The trim stores the new size before it unseals the cursor, which the
/// fetch-add acquires; a trim after the second load cuts at or above the reservation's end.
///
/// The next append's slot bound is always at or below the cursor, which makes the proof above
/// hold across gives-back, voids and trims (a trim cuts at the cursor, above every completed
/// reservation).
package enum MetadataLayout {
    package static let magic: UInt64 = 0x0A1A_474F_4C4D_4D89  // "\x89MMLOG\x1a\n" in little-endian files
    package static let version: UInt32 = 3
    package static let headerSize = 4096
    package static let ready: UInt64 = 0x5245_4144_59  // "YDAER"

    // Page 0.
    package static let magicOffset = 0
    package static let versionOffset = 8
    package static let headerSizeOffset = 12
    package static let pageSizeOffset = 16
    package static let slotCountOffset = 20
    package static let chunkSizeOffset = 24
    package static let holeCapacityOffset = 32
    package static let metadataSizeOffset = 36
    package static let stateOffset = 64
    package static let trimCursorOffset = 72
    package static let cleanOffset = 80
    package static let dataDeviceOffset = 88
    package static let dataInodeOffset = 96
    package static let bootIDOffset = 104
    package static let recoveriesOffset = 120
    package static let fileSizeOffset = 128
    package static let cursorOffset = 192
    package static let durableOffset = 256
    package static let flushStartedOffset = 264
    package static let flushDoneOffset = 272
    package static let flushWaitersOffset = 276
    package static let flushesOffset = 280
    package static let syncCallsOffset = 288
    package static let holeCountOffset = 320
    package static let holesDroppedOffset = 328
    package static let holeReachOffset = 336
    package static let slotHighWaterOffset = 344
    package static let voidPointsOffset = 384
    package static let voidPointCount = 64
    package static let retiredAtOffset = 896
    package static let rotationsOffset = 904
    package static let rotateAtBytesOffset = 912
    package static let crossingEndOffset = 920
    package static let lockRegionOffset = 136
    package static let lockNameOffset = 928
    package static let lockNameCapacity = 92
    package static let lockSuffix = ".mmlog-lock"
    package static let retiredNameOffset = 1024
    package static let retiredNameCapacity = 1000
    package static let handlesOffset = 2048
    package static let handleEntrySize = 16
    package static let handleCount = 128

    // The writer table and the hole table.
    package static let slotCount = 512
    package static let slotSize = 128
    package static let slotsOffset = headerSize
    package static let holeCapacity = 4096
    package static let holeEntrySize = 16
    package static let holesOffset = slotsOffset + slotCount * slotSize
    package static let metadataSize = holesOffset + holeCapacity * holeEntrySize

    /// Version 1 (one page, no writer table), which version 3 upgrades in place when alone.
    package static let version1: UInt32 = 1
    /// Version 2 (version 3's layout, its locks in the metadata file), upgraded in place when alone.
    package static let version2: UInt32 = 2

    // Lock bytes.
    package static let initLockByte = 0
    package static let attachLockByte = 1
    package static let growLockByte = 2
    package static let flushLockByte = 3
    package static let rotateLockByte = 4
    package static let handleLockBase = 1024
    package static let slotLockBase = 4096
    /// The byte of the data file every handle locks shared (versions 1 and 2).
    package static let dataLockByte = 0
    /// In the lock file: the path's creation lock, and where data files' bytes start.
    package static let creationLockByte = 0
    package static let dataLockBase = 1 << 50
    package static let dataLockMask: UInt64 = (1 << 48) - 1
    /// A header's lock region: a multiple of 2^16 in [2^20, 2^46].
    package static let lockRegionRange: ClosedRange<UInt64> = (1 << 20)...(1 << 46)

    /// Offsets and sizes above this are "beyond reason" (256 TiB): a corrupt header.
    package static let maxOffset: UInt64 = 1 << 48
    /// The log refuses to grow past this (128 TiB), so the cursor's offset bits never carry.
    package static let maxLogSize: UInt64 = 1 << 47
    /// Whether the metadata file `fd` holds a header its creator published (`state` read with
    /// pread: before any mapping, so an empty or half-made file is simply "not ready").
    static func headerIsReady(_ fd: Int32) -> Bool {
        var state: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &state) { pread(fd, $0.baseAddress, 8, off_t(stateOffset)) }
        return n == 8 && state == ready
    }

    /// The largest chunk (1 GiB): a header asking for more (the fuzzer's 4 GiB) would make
    /// every opener allocate and map gigabytes before its first append.
    package static let maxChunkSize = 1 << 30
    /// The largest record one append takes (4 GiB - 1).
    package static let maxRecordSize = (1 << 32) - 1
}

/// The cursor word: bits 0-47 the offset of the next reservation; bits 48-61 the generation
/// (bumped by every void, see `MetadataLayout`); bit 62 retired (a rotation moved the log on);
/// bit 63 sealed (a trim in this handle is cutting the file; only the trimming process can
/// see it, since a trim runs only when no other handle is attached). Appends add record
/// sizes (below 2^32) to offsets below 2^47, so the offset never carries into the generation.
package enum Cursor {
    package static let offsetMask: UInt64 = (1 << 48) - 1
    package static let genShift: UInt64 = 48
    package static let genMask: UInt64 = 0x3FFF << 48
    package static let retiredBit: UInt64 = 1 << 62
    package static let sealBit: UInt64 = 1 << 63
    package static let flagMask: UInt64 = retiredBit | sealBit

    @inline(__always) package static func offset(_ word: UInt64) -> UInt64 { word & offsetMask }
    @inline(__always) package static func gen(_ word: UInt64) -> UInt64 { (word & genMask) >> genShift }
    /// Generations from `older` to `newer`, modulo the 14 bits.
    static func genDistance(from older: UInt64, to newer: UInt64) -> UInt64 { (newer &- older) & (genMask >> genShift) }
    @inline(__always) package static func make(offset: UInt64, gen: UInt64, flags: UInt64 = 0) -> UInt64 {
        (offset & offsetMask) | ((gen & 0x3FFF) << genShift) | flags
    }
}

/// One writer slot: 128 bytes (two cache lines, so the adjacent-line prefetcher does not make
/// neighbours share), owned by the thread that holds its lock byte.
///
/// ```
/// offset size field   written by        memory order
///      0    8 state   the owner thread   see below; readers load it acquiring
///      8    8 end     the owner thread   relaxed, published by state's releasing store
///     16    4 pid     the claimer        plain (for stat)
///     20    4 tid     the claimer        plain (for stat)
///     24    8 claims  the claimer        relaxed: bumped at every claim, so a reader that saw
///                                        a reservation can tell a new owner from the same one
/// ```
///
/// `state`: bit 63 in flight; bit 62 exact; bits 48-61 the reservation's generation (exact
/// only); bits 0-47 an offset: in flight and not exact, a lower bound of the reservation's
/// start; in flight and exact, its start (`end` holds its end); idle, the end of the owner's
/// last completed reservation (the next bound).
package enum Slot {
    package static let stateOffset = 0
    package static let endOffset = 8
    package static let pidOffset = 16
    package static let tidOffset = 20
    package static let claimsOffset = 24

    package static let inFlight: UInt64 = 1 << 63
    package static let exact: UInt64 = 1 << 62
}

/// Typed access to a mapped metadata file. Holds only the mapping's address.
struct Metadata {
    let base: UnsafeMutableRawPointer

    @inline(__always)
    func atomic(_ offset: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
    }

    @inline(__always)
    func atomic32(_ offset: Int) -> UnsafeAtomic<UInt32> {
        UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UnsafeAtomic<UInt32>.Storage.self))
    }

    /// Binds the atomic fields' memory; call once per mapping before using them. `length` is
    /// how much is mapped (a version 1 header maps only page 0).
    static func bind(_ base: UnsafeMutableRawPointer, length: Int) -> Metadata {
        typealias L = MetadataLayout
        var words = [L.stateOffset, L.trimCursorOffset, L.cleanOffset, L.fileSizeOffset, L.cursorOffset, L.durableOffset,
                     L.flushStartedOffset, L.flushesOffset, L.syncCallsOffset, L.holeCountOffset,
                     L.holesDroppedOffset, L.holeReachOffset, L.slotHighWaterOffset, L.retiredAtOffset,
                     L.rotationsOffset, L.rotateAtBytesOffset, L.crossingEndOffset]
        words += (0..<L.voidPointCount).map { L.voidPointsOffset + 8 * $0 }
        for offset in words {
            (base + offset).bindMemory(to: UnsafeAtomic<UInt64>.Storage.self, capacity: 1)
        }
        for offset in [L.flushDoneOffset, L.flushWaitersOffset] {
            (base + offset).bindMemory(to: UnsafeAtomic<UInt32>.Storage.self, capacity: 1)
        }
        if length >= L.metadataSize {
            for i in 0..<L.slotCount {
                let slot = base + L.slotsOffset + i * L.slotSize
                for offset in [Slot.stateOffset, Slot.endOffset, Slot.claimsOffset] {
                    (slot + offset).bindMemory(to: UnsafeAtomic<UInt64>.Storage.self, capacity: 1)
                }
            }
            (base + L.holesOffset).bindMemory(to: UnsafeAtomic<UInt64>.Storage.self, capacity: 2 * L.holeCapacity)
        }
        return Metadata(base: base)
    }

    var state: UnsafeAtomic<UInt64> { atomic(MetadataLayout.stateOffset) }
    var fileSize: UnsafeAtomic<UInt64> { atomic(MetadataLayout.fileSizeOffset) }
    var cursor: UnsafeAtomic<UInt64> { atomic(MetadataLayout.cursorOffset) }
    var clean: UnsafeAtomic<UInt64> { atomic(MetadataLayout.cleanOffset) }
    var trimCursor: UnsafeAtomic<UInt64> { atomic(MetadataLayout.trimCursorOffset) }
    var durable: UnsafeAtomic<UInt64> { atomic(MetadataLayout.durableOffset) }
    var flushStarted: UnsafeAtomic<UInt64> { atomic(MetadataLayout.flushStartedOffset) }
    var flushDone: UnsafeAtomic<UInt32> { atomic32(MetadataLayout.flushDoneOffset) }
    var flushWaiters: UnsafeAtomic<UInt32> { atomic32(MetadataLayout.flushWaitersOffset) }
    var flushes: UnsafeAtomic<UInt64> { atomic(MetadataLayout.flushesOffset) }
    var syncCalls: UnsafeAtomic<UInt64> { atomic(MetadataLayout.syncCallsOffset) }
    var holeCount: UnsafeAtomic<UInt64> { atomic(MetadataLayout.holeCountOffset) }
    var holesDropped: UnsafeAtomic<UInt64> { atomic(MetadataLayout.holesDroppedOffset) }
    var holeReach: UnsafeAtomic<UInt64> { atomic(MetadataLayout.holeReachOffset) }
    var slotHighWater: UnsafeAtomic<UInt64> { atomic(MetadataLayout.slotHighWaterOffset) }
    var retiredAt: UnsafeAtomic<UInt64> { atomic(MetadataLayout.retiredAtOffset) }
    var rotations: UnsafeAtomic<UInt64> { atomic(MetadataLayout.rotationsOffset) }
    var rotateAtBytes: UnsafeAtomic<UInt64> { atomic(MetadataLayout.rotateAtBytesOffset) }
    var crossingEnd: UnsafeAtomic<UInt64> { atomic(MetadataLayout.crossingEndOffset) }

    /// The name the data file is retired under (set by a rotation before the retired bit).
    var retiredName: String {
        get {
            let length = min(Int(base.load(fromByteOffset: MetadataLayout.retiredNameOffset, as: UInt32.self)),
                             MetadataLayout.retiredNameCapacity)
            return String(decoding: UnsafeRawBufferPointer(start: base + MetadataLayout.retiredNameOffset + 4, count: length),
                          as: UTF8.self)
        }
        nonmutating set {
            let bytes = Array(newValue.utf8.prefix(MetadataLayout.retiredNameCapacity))
            bytes.withUnsafeBytes { (base + MetadataLayout.retiredNameOffset + 4).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            base.storeBytes(of: UInt32(bytes.count), toByteOffset: MetadataLayout.retiredNameOffset, as: UInt32.self)
        }
    }

    func voidPoint(_ gen: UInt64) -> UnsafeAtomic<UInt64> {
        atomic(MetadataLayout.voidPointsOffset + 8 * Int(gen % UInt64(MetadataLayout.voidPointCount)))
    }

    var magic: UInt64 { base.load(fromByteOffset: MetadataLayout.magicOffset, as: UInt64.self) }
    /// `crossingEnd` when it can be the end of a record that straddles `rotateAtBytes`, else 0
    /// (a corrupt value would become a rotated file's end and cut its records off).
    var validCrossingEnd: UInt64 {
        let crossing = crossingEnd.load(ordering: .relaxed), size = rotateAtBytes.load(ordering: .relaxed)
        guard crossing > size, size > 0, crossing - size <= UInt64(MetadataLayout.maxRecordSize) else { return 0 }
        return crossing
    }
    var lockRegion: UInt64 {
        get { base.load(fromByteOffset: MetadataLayout.lockRegionOffset, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: MetadataLayout.lockRegionOffset, as: UInt64.self) }
    }
    /// The lock file's name ("" when the length is out of range).
    var lockName: String {
        get {
            let length = Int(base.load(fromByteOffset: MetadataLayout.lockNameOffset, as: UInt32.self))
            guard length <= MetadataLayout.lockNameCapacity else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: base + MetadataLayout.lockNameOffset + 4, count: length), as: UTF8.self)
        }
        nonmutating set {
            let bytes = Array(newValue.utf8.prefix(MetadataLayout.lockNameCapacity))
            (base + MetadataLayout.lockNameOffset + 4).initializeMemory(as: UInt8.self, repeating: 0, count: MetadataLayout.lockNameCapacity)
            bytes.withUnsafeBytes { (base + MetadataLayout.lockNameOffset + 4).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            base.storeBytes(of: UInt32(bytes.count), toByteOffset: MetadataLayout.lockNameOffset, as: UInt32.self)
        }
    }
    var version: UInt32 { base.load(fromByteOffset: MetadataLayout.versionOffset, as: UInt32.self) }
    var headerSize: UInt32 { base.load(fromByteOffset: MetadataLayout.headerSizeOffset, as: UInt32.self) }
    var pageSize: UInt32 { base.load(fromByteOffset: MetadataLayout.pageSizeOffset, as: UInt32.self) }
    var slotCount: UInt32 { base.load(fromByteOffset: MetadataLayout.slotCountOffset, as: UInt32.self) }
    var chunkSize: UInt64 { base.load(fromByteOffset: MetadataLayout.chunkSizeOffset, as: UInt64.self) }
    var holeCapacity: UInt32 { base.load(fromByteOffset: MetadataLayout.holeCapacityOffset, as: UInt32.self) }
    var metadataSize: UInt32 { base.load(fromByteOffset: MetadataLayout.metadataSizeOffset, as: UInt32.self) }

    var dataDevice: UInt64 {
        get { base.load(fromByteOffset: MetadataLayout.dataDeviceOffset, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: MetadataLayout.dataDeviceOffset, as: UInt64.self) }
    }
    var dataInode: UInt64 {
        get { base.load(fromByteOffset: MetadataLayout.dataInodeOffset, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: MetadataLayout.dataInodeOffset, as: UInt64.self) }
    }
    var bootID: [UInt8] {
        get { (0..<16).map { base.load(fromByteOffset: MetadataLayout.bootIDOffset + $0, as: UInt8.self) } }
        nonmutating set {
            for (i, byte) in newValue.prefix(16).enumerated() {
                base.storeBytes(of: byte, toByteOffset: MetadataLayout.bootIDOffset + i, as: UInt8.self)
            }
        }
    }
    var recoveries: UInt32 {
        get { base.load(fromByteOffset: MetadataLayout.recoveriesOffset, as: UInt32.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: MetadataLayout.recoveriesOffset, as: UInt32.self) }
    }

    // MARK: The writer table

    @inline(__always)
    func slot(_ index: Int) -> UnsafeMutableRawPointer {
        base + MetadataLayout.slotsOffset + index * MetadataLayout.slotSize
    }

    @inline(__always)
    func slotState(_ index: Int) -> UnsafeAtomic<UInt64> { Metadata.slotWord(slot(index), Slot.stateOffset) }

    @inline(__always)
    func slotEnd(_ index: Int) -> UnsafeAtomic<UInt64> { Metadata.slotWord(slot(index), Slot.endOffset) }

    @inline(__always)
    func slotClaims(_ index: Int) -> UnsafeAtomic<UInt64> { Metadata.slotWord(slot(index), Slot.claimsOffset) }

    func slotOwner(_ index: Int) -> (pid: Int32, tid: Int32) {
        let s = slot(index)
        return (s.load(fromByteOffset: Slot.pidOffset, as: Int32.self), s.load(fromByteOffset: Slot.tidOffset, as: Int32.self))
    }

    func setSlotOwner(_ index: Int, pid: Int32, tid: Int32) {
        let s = slot(index)
        s.storeBytes(of: pid, toByteOffset: Slot.pidOffset, as: Int32.self)
        s.storeBytes(of: tid, toByteOffset: Slot.tidOffset, as: Int32.self)
    }

    @inline(__always)
    static func slotWord(_ slot: UnsafeMutableRawPointer, _ offset: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (slot + offset).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
    }

    // MARK: The hole table

    /// Entry `i` of the hole table: (start, end), end == 0 for a clip at `start`. Relaxed loads;
    /// entries below `holeCount` (loaded acquiring) are complete.
    func holeEntry(_ i: Int) -> (start: UInt64, end: UInt64) {
        let p = base + MetadataLayout.holesOffset + i * MetadataLayout.holeEntrySize
        let start = UnsafeAtomic<UInt64>(at: p.assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
        let end = UnsafeAtomic<UInt64>(at: (p + 8).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
        return (start.load(ordering: .relaxed), end.load(ordering: .relaxed))
    }

    func setHoleEntry(_ i: Int, start: UInt64, end: UInt64) {
        let p = base + MetadataLayout.holesOffset + i * MetadataLayout.holeEntrySize
        UnsafeAtomic<UInt64>(at: p.assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self)).store(start, ordering: .relaxed)
        UnsafeAtomic<UInt64>(at: (p + 8).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self)).store(end, ordering: .relaxed)
    }

    // MARK: Handles

    func handleEntry(_ i: Int) -> UnsafeMutableRawPointer {
        base + MetadataLayout.handlesOffset + i * MetadataLayout.handleEntrySize
    }

    // MARK: Creation and checks

    /// Writes a fresh version 3 header. The caller holds the init lock, has sized the file to
    /// `metadataSize`, and publishes it afterwards with `state.store(ready, ordering: .releasing)`
    /// (paired with the acquiring load in `open`).
    func initialize(pageSize: Int, chunkSize: Int, dataSize: Int, rotateAtBytes: Int, lockRegion: UInt64, lockName: String) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: MetadataLayout.metadataSize)
        self.lockRegion = lockRegion
        self.lockName = lockName
        base.storeBytes(of: MetadataLayout.magic, toByteOffset: MetadataLayout.magicOffset, as: UInt64.self)
        base.storeBytes(of: MetadataLayout.version, toByteOffset: MetadataLayout.versionOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.headerSize), toByteOffset: MetadataLayout.headerSizeOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(pageSize), toByteOffset: MetadataLayout.pageSizeOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.slotCount), toByteOffset: MetadataLayout.slotCountOffset, as: UInt32.self)
        base.storeBytes(of: UInt64(chunkSize), toByteOffset: MetadataLayout.chunkSizeOffset, as: UInt64.self)
        base.storeBytes(of: UInt32(MetadataLayout.holeCapacity), toByteOffset: MetadataLayout.holeCapacityOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.metadataSize), toByteOffset: MetadataLayout.metadataSizeOffset, as: UInt32.self)
        fileSize.store(UInt64(dataSize), ordering: .relaxed)
        _ = cursor.exchange(UInt64(dataSize), ordering: .relaxed)
        self.rotateAtBytes.store(UInt64(rotateAtBytes), ordering: .relaxed)
    }

    /// Checks a header that claims to be ready. Returns nil when it is usable, else why not.
    /// `length` is the metadata file's size.
    func problem(pageSize: Int, length: Int) -> (MMLogError.Kind, String)? {
        typealias L = MetadataLayout
        if magic != L.magic {
            if magic == L.magic.byteSwapped {
                return (.incompatibleMetadata, "written on a machine of the other byte order")
            }
            return (.corruptMetadata, "bad magic 0x\(String(magic, radix: 16))")
        }
        if version != L.version && version != L.version2 && version != L.version1 {
            return (.incompatibleMetadata, "format version \(version), this MMLog reads versions 1 to \(L.version)")
        }
        if headerSize != UInt32(L.headerSize) {
            return (.corruptMetadata, "header size \(headerSize), expected \(L.headerSize)")
        }
        if Int(self.pageSize) != pageSize {
            return (.incompatibleMetadata, "page size \(self.pageSize), this machine's is \(pageSize)")
        }
        let chunk = chunkSize
        if chunk == 0 || chunk % UInt64(pageSize) != 0 || chunk & (chunk - 1) != 0 || chunk > UInt64(L.maxChunkSize) {
            return (.corruptMetadata, "chunk size \(chunk) is not a power-of-two multiple of the page size")
        }
        let size = fileSize.load(ordering: .acquiring)
        let word = cursor.load(ordering: .acquiring)
        if version == L.version1 {
            // Version 1 kept only a seal bit above the offset.
            if size > L.maxOffset || word & ~Cursor.sealBit > L.maxOffset {
                return (.corruptMetadata, "cursor \(word & ~Cursor.sealBit) or file size \(size) beyond 2^48")
            }
            if trimCursor.load(ordering: .relaxed) > L.maxOffset {
                return (.corruptMetadata, "trim cursor \(trimCursor.load(ordering: .relaxed)) beyond 2^48")
            }
            return nil
        }
        if slotCount != UInt32(L.slotCount) || holeCapacity != UInt32(L.holeCapacity) || metadataSize != UInt32(L.metadataSize) {
            return (.corruptMetadata, "table sizes \(slotCount) slots, \(holeCapacity) holes, \(metadataSize) bytes; expected \(L.slotCount), \(L.holeCapacity), \(L.metadataSize)")
        }
        if length < L.metadataSize {
            return (.corruptMetadata, "the file is \(length) bytes; version \(version) metadata is \(L.metadataSize)")
        }
        if version == L.version {
            let region = lockRegion
            if !L.lockRegionRange.contains(region) || region & 0xFFFF != 0 {
                return (.corruptMetadata, "lock region \(region) out of range")
            }
            if !Locks.validName(lockName) {
                return (.corruptMetadata, "lock file name \"\(lockName)\" is not <name>\(L.lockSuffix)")
            }
        }
        if size > L.maxOffset || Cursor.offset(word) > L.maxLogSize + (1 << 33) || word & ~(Cursor.offsetMask | Cursor.genMask | Cursor.flagMask) != 0 {
            return (.corruptMetadata, "cursor 0x\(String(word, radix: 16)) or file size \(size) out of range")
        }
        let trim = trimCursor.load(ordering: .relaxed)
        if trim > L.maxOffset {
            return (.corruptMetadata, "trim cursor \(trim) beyond 2^48")
        }
        if word & Cursor.retiredBit != 0 {
            // A rotation stores its name and end before the bit: a retired header has both.
            let nameLength = base.load(fromByteOffset: L.retiredNameOffset, as: UInt32.self)
            if nameLength == 0 || nameLength > UInt32(L.retiredNameCapacity) || retiredName.contains("\0") {
                return (.corruptMetadata, "retired without a valid retired name")
            }
            if retiredAt.load(ordering: .relaxed) > Cursor.offset(word) {
                return (.corruptMetadata, "retired at \(retiredAt.load(ordering: .relaxed)), past its cursor \(Cursor.offset(word))")
            }
        }
        let holes = holeCount.load(ordering: .acquiring)
        if holes > UInt64(L.holeCapacity) {
            return (.corruptMetadata, "hole count \(holes) beyond the table's \(L.holeCapacity)")
        }
        if slotHighWater.load(ordering: .relaxed) > UInt64(L.slotCount) {
            return (.corruptMetadata, "slot high-water mark \(slotHighWater.load(ordering: .relaxed)) beyond \(L.slotCount)")
        }
        return nil
    }
}
