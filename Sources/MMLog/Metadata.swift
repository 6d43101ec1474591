import Atomics

/// The metadata file `<path>.mmlog`, format version 1.
///
/// One page (the header size), mapped `MAP_SHARED` by every handle of every process.
/// Integers are in the machine's byte order; the magic number catches a file written with
/// the other byte order. Fields that change after creation each have a cache line of their
/// own, so the hot cursor does not evict the read-mostly file size.
///
/// ```
/// offset size field        written by                         memory order
///      0    8 magic        creator, before `state` = ready    plain; published by state's release
///      8    4 version      creator                            plain
///     12    4 headerSize   creator                            plain
///     16    4 pageSize     creator                            plain
///     20    4 (zero)
///     24    8 chunkSize    creator                            plain
///     64    8 state        creator: 0 -> ready                releasing store / acquiring load
///     72    8 trimCursor   trimmer, before sealing cursor     plain (read only by recovery, under locks)
///    128    8 fileSize     grower (grow lock), trimmer        releasing store / acquiring load
///    192    8 cursor       every append: fetch-add            acquiring fetch-add; trimmer: CAS + releasing store
///  256..<headerSize         zero
/// ```
///
/// Invariants:
/// - `cursor & sealBit == 0` except while a trim runs; a trim runs only in a handle that holds
///   the attach lock exclusively, so only that process's threads can see the seal.
/// - Every byte below `fileSize` is allocated in the data file (fallocate), so stores through
///   a mapping below it cannot SIGBUS for lack of space.
/// - `cursor` (without the seal) only grows, except when a trim gives back nothing and when a
///   failed append returns its own reservation with a CAS from its end to its start.
/// - An append writes only inside the range its fetch-add reserved.
///
/// Locks: OFD locks on single bytes of the metadata file (released by the kernel when the
/// holder dies): byte 0 serialises creation and opening, byte 1 is held shared by every open
/// handle (exclusive means "no one else is attached": the condition for trim), byte 2
/// serialises growing the data file across processes.
struct MetadataLayout {
    static let magic: UInt64 = 0x0A1A_474F_4C4D_4D89  // "\x89MMLOG\x1a\n" in little-endian files
    static let version: UInt32 = 1
    static let headerSize = 4096
    static let ready: UInt64 = 0x5245_4144_59  // "YDAER"
    static let sealBit: UInt64 = 1 << 63

    static let magicOffset = 0
    static let versionOffset = 8
    static let headerSizeOffset = 12
    static let pageSizeOffset = 16
    static let chunkSizeOffset = 24
    static let stateOffset = 64
    static let trimCursorOffset = 72
    static let fileSizeOffset = 128
    static let cursorOffset = 192

    /// Cursor and file size above this are "beyond reason" (256 TiB): a corrupt header.
    static let maxOffset: UInt64 = 1 << 48
    /// How far the cursor may run past the data file's end at open (reservations whose
    /// writers died before the file grew). Past it the header is refused as corrupt.
    static let maxCursorLead: UInt64 = 1 << 30

    static let initLockByte = 0
    static let attachLockByte = 1
    static let growLockByte = 2
}

/// Typed access to a mapped header. Holds only the mapping's address.
struct Metadata {
    let base: UnsafeMutableRawPointer

    private func atomic(_ offset: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
    }

    /// Binds the atomic fields' memory; call once per mapping before using them.
    static func bind(_ base: UnsafeMutableRawPointer) -> Metadata {
        for offset in [MetadataLayout.stateOffset, MetadataLayout.fileSizeOffset, MetadataLayout.cursorOffset] {
            (base + offset).bindMemory(to: UnsafeAtomic<UInt64>.Storage.self, capacity: 1)
        }
        return Metadata(base: base)
    }

    var state: UnsafeAtomic<UInt64> { atomic(MetadataLayout.stateOffset) }
    var fileSize: UnsafeAtomic<UInt64> { atomic(MetadataLayout.fileSizeOffset) }
    var cursor: UnsafeAtomic<UInt64> { atomic(MetadataLayout.cursorOffset) }

    var magic: UInt64 { base.load(fromByteOffset: MetadataLayout.magicOffset, as: UInt64.self) }
    var version: UInt32 { base.load(fromByteOffset: MetadataLayout.versionOffset, as: UInt32.self) }
    var headerSize: UInt32 { base.load(fromByteOffset: MetadataLayout.headerSizeOffset, as: UInt32.self) }
    var pageSize: UInt32 { base.load(fromByteOffset: MetadataLayout.pageSizeOffset, as: UInt32.self) }
    var chunkSize: UInt64 { base.load(fromByteOffset: MetadataLayout.chunkSizeOffset, as: UInt64.self) }

    var trimCursor: UInt64 {
        get { base.load(fromByteOffset: MetadataLayout.trimCursorOffset, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: MetadataLayout.trimCursorOffset, as: UInt64.self) }
    }

    /// Writes a fresh header. The caller holds the init lock and publishes it afterwards with
    /// `state.store(ready, ordering: .releasing)` (paired with the acquiring load in `open`).
    func initialize(pageSize: Int, chunkSize: Int, dataSize: Int) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: MetadataLayout.stateOffset)
        base.storeBytes(of: MetadataLayout.magic, toByteOffset: MetadataLayout.magicOffset, as: UInt64.self)
        base.storeBytes(of: MetadataLayout.version, toByteOffset: MetadataLayout.versionOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(MetadataLayout.headerSize), toByteOffset: MetadataLayout.headerSizeOffset, as: UInt32.self)
        base.storeBytes(of: UInt32(pageSize), toByteOffset: MetadataLayout.pageSizeOffset, as: UInt32.self)
        base.storeBytes(of: UInt64(chunkSize), toByteOffset: MetadataLayout.chunkSizeOffset, as: UInt64.self)
        trimCursor = 0
        fileSize.store(UInt64(dataSize), ordering: .relaxed)
        cursor.store(UInt64(dataSize), ordering: .relaxed)
    }

    /// Checks a header that claims to be ready. Returns nil when it is usable, else why not.
    func problem(pageSize: Int) -> (MMLogError.Kind, String)? {
        if magic != MetadataLayout.magic {
            if magic == MetadataLayout.magic.byteSwapped {
                return (.incompatibleMetadata, "written on a machine of the other byte order")
            }
            return (.corruptMetadata, "bad magic 0x\(String(magic, radix: 16))")
        }
        if version != MetadataLayout.version {
            return (.incompatibleMetadata, "format version \(version), this MMLog reads version \(MetadataLayout.version)")
        }
        if headerSize != UInt32(MetadataLayout.headerSize) {
            return (.corruptMetadata, "header size \(headerSize), expected \(MetadataLayout.headerSize)")
        }
        if Int(self.pageSize) != pageSize {
            return (.incompatibleMetadata, "page size \(self.pageSize), this machine's is \(pageSize)")
        }
        let chunk = chunkSize
        if chunk == 0 || chunk % UInt64(pageSize) != 0 || chunk & (chunk - 1) != 0 || chunk > 1 << 40 {
            return (.corruptMetadata, "chunk size \(chunk) is not a power-of-two multiple of the page size")
        }
        let size = fileSize.load(ordering: .acquiring)
        let end = cursor.load(ordering: .acquiring) & ~MetadataLayout.sealBit
        if size > MetadataLayout.maxOffset || end > MetadataLayout.maxOffset {
            return (.corruptMetadata, "cursor \(end) or file size \(size) beyond 2^48")
        }
        if trimCursor > MetadataLayout.maxOffset {
            return (.corruptMetadata, "trim cursor \(trimCursor) beyond 2^48")
        }
        return nil
    }
}
