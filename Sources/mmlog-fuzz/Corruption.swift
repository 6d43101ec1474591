// What mmlog-fuzz changes in a header: every field of every table (from the library's own
// layout), boundary values, and recipes that change the fields that only mean something
// together (a slot's state and end and the high-water mark that makes readers look at it).
#if canImport(Glibc)
import Glibc
#endif
import BenchRecords
import MMLog

/// One field of the metadata file: a name a person can find in `Metadata.swift`, its offset
/// and its width in bytes (1, 4 or 8, machine byte order).
struct Field: Hashable {
    var name: String
    var offset: Int
    var width: Int
}

/// One change: a field and the value stored in it (truncated to the field's width).
struct Change {
    var field: Field
    var value: UInt64

    var description: String { "\(field.name)=\(show(value & mask(field.width)))" }
}

func mask(_ width: Int) -> UInt64 { width >= 8 ? .max : (1 << UInt64(8 * width)) - 1 }

/// Small values in decimal, large ones in hex too (2^63 reads better as 0x8000000000000000).
func show(_ value: UInt64) -> String {
    value < 1 << 32 ? "\(value)" : "\(value) (0x\(String(value, radix: 16)))"
}

enum Fields {
    typealias L = MetadataLayout

    static let page0: [Field] = [
        Field(name: "magic", offset: L.magicOffset, width: 8),
        Field(name: "version", offset: L.versionOffset, width: 4),
        Field(name: "headerSize", offset: L.headerSizeOffset, width: 4),
        Field(name: "pageSize", offset: L.pageSizeOffset, width: 4),
        Field(name: "slotCount", offset: L.slotCountOffset, width: 4),
        Field(name: "chunkSize", offset: L.chunkSizeOffset, width: 8),
        Field(name: "holeCapacity", offset: L.holeCapacityOffset, width: 4),
        Field(name: "metadataSize", offset: L.metadataSizeOffset, width: 4),
        Field(name: "state", offset: L.stateOffset, width: 8),
        Field(name: "trimCursor", offset: L.trimCursorOffset, width: 8),
        Field(name: "clean", offset: L.cleanOffset, width: 8),
        Field(name: "dataDevice", offset: L.dataDeviceOffset, width: 8),
        Field(name: "dataInode", offset: L.dataInodeOffset, width: 8),
        Field(name: "bootID[0..<8]", offset: L.bootIDOffset, width: 8),
        Field(name: "bootID[8..<16]", offset: L.bootIDOffset + 8, width: 8),
        Field(name: "recoveries", offset: L.recoveriesOffset, width: 4),
        Field(name: "fileSize", offset: L.fileSizeOffset, width: 8),
        Field(name: "cursor", offset: L.cursorOffset, width: 8),
        lockRegion, lockNameLength,
    ] + counters + holeFields + rotationFields + [slotHighWater]

    /// Format 3: this header's region of the lock file, and the lock file's name.
    static let lockRegion = Field(name: "lockRegion", offset: L.lockRegionOffset, width: 8)
    static let lockNameLength = Field(name: "lockNameLength", offset: L.lockNameOffset, width: 4)
    static func lockNameByte(_ i: Int) -> Field {
        Field(name: "lockName[\(i)]", offset: L.lockNameOffset + 4 + i, width: 1)
    }

    static let counters: [Field] = [
        Field(name: "durable", offset: L.durableOffset, width: 8),
        Field(name: "flushStarted", offset: L.flushStartedOffset, width: 8),
        Field(name: "flushDone", offset: L.flushDoneOffset, width: 4),
        Field(name: "flushWaiters", offset: L.flushWaitersOffset, width: 4),
        Field(name: "flushes", offset: L.flushesOffset, width: 8),
        Field(name: "syncCalls", offset: L.syncCallsOffset, width: 8),
        Field(name: "recoveries", offset: L.recoveriesOffset, width: 4),
    ]
    static let holeCount = Field(name: "holeCount", offset: L.holeCountOffset, width: 8)
    static let holesDropped = Field(name: "holesDropped", offset: L.holesDroppedOffset, width: 8)
    static let holeReach = Field(name: "holeReach", offset: L.holeReachOffset, width: 8)
    static let holeFields = [holeCount, holesDropped, holeReach]
    static let slotHighWater = Field(name: "slotHighWater", offset: L.slotHighWaterOffset, width: 8)
    static let cursor = Field(name: "cursor", offset: L.cursorOffset, width: 8)
    static let fileSize = Field(name: "fileSize", offset: L.fileSizeOffset, width: 8)
    static let retiredAt = Field(name: "retiredAt", offset: L.retiredAtOffset, width: 8)
    static let rotations = Field(name: "rotations", offset: L.rotationsOffset, width: 8)
    static let rotateAtBytes = Field(name: "rotateAtBytes", offset: L.rotateAtBytesOffset, width: 8)
    static let crossingEnd = Field(name: "crossingEnd", offset: L.crossingEndOffset, width: 8)
    static let retiredNameLength = Field(name: "retiredNameLength", offset: L.retiredNameOffset, width: 4)
    static let rotationFields = [retiredAt, rotations, rotateAtBytes, crossingEnd, retiredNameLength]

    static func voidPoint(_ i: Int) -> Field {
        Field(name: "voidPoints[\(i)]", offset: L.voidPointsOffset + 8 * i, width: 8)
    }
    static func retiredNameByte(_ i: Int) -> Field {
        Field(name: "retiredName[\(i)]", offset: L.retiredNameOffset + 4 + i, width: 1)
    }
    static func slot(_ i: Int, _ word: String) -> Field {
        let base = L.slotsOffset + i * L.slotSize
        switch word {
        case "state": return Field(name: "slot[\(i)].state", offset: base + Slot.stateOffset, width: 8)
        case "end": return Field(name: "slot[\(i)].end", offset: base + Slot.endOffset, width: 8)
        case "pid": return Field(name: "slot[\(i)].pid", offset: base + Slot.pidOffset, width: 4)
        case "tid": return Field(name: "slot[\(i)].tid", offset: base + Slot.tidOffset, width: 4)
        default: return Field(name: "slot[\(i)].claims", offset: base + Slot.claimsOffset, width: 8)
        }
    }
    static let slotWords = ["state", "end", "pid", "tid", "claims"]
    static func hole(_ i: Int, end: Bool) -> Field {
        Field(name: "holes[\(i)].\(end ? "end" : "start")", offset: L.holesOffset + i * L.holeEntrySize + (end ? 8 : 0), width: 8)
    }
    static func handle(_ i: Int, _ word: String) -> Field {
        let base = L.handlesOffset + i * L.handleEntrySize
        switch word {
        case "pid": return Field(name: "handles[\(i)].pid", offset: base, width: 4)
        case "inUse": return Field(name: "handles[\(i)].inUse", offset: base + 4, width: 4)
        default: return Field(name: "handles[\(i)].openedAt", offset: base + 8, width: 8)
        }
    }
    static let handleWords = ["pid", "inUse", "openedAt"]

    /// Any one field, of any table.
    static func any(_ random: inout SplitMix64) -> Field {
        switch random.below(6) {
        case 0, 1: return page0[random.below(page0.count)]
        case 2: return slot(pickSlot(&random), slotWords[random.below(slotWords.count)])
        case 3: return hole(random.below(8) == 0 ? random.below(L.holeCapacity) : random.below(4), end: random.below(2) == 0)
        case 4: return handle(pickHandle(&random), handleWords[random.below(handleWords.count)])
        default:
            switch random.below(3) {
            case 0: return voidPoint(random.below(L.voidPointCount))
            case 1: return retiredNameByte(random.below(L.retiredNameCapacity))
            default: return lockNameByte(random.below(L.lockNameCapacity))
            }
        }
    }

    static func pickSlot(_ random: inout SplitMix64) -> Int {
        [0, 0, 1, 2, L.slotCount - 2, L.slotCount - 1, random.below(L.slotCount)][random.below(7)]
    }
    static func pickHandle(_ random: inout SplitMix64) -> Int {
        [0, 0, 1, L.handleCount - 1, random.below(L.handleCount)][random.below(5)]
    }
}

/// What the pristine log looks like: the values boundary choices are made around.
struct Pristine {
    var dataSize: UInt64
    var fileSize: UInt64
    var cursor: UInt64  // the offset

    /// Boundary values for a 64-bit field: the edges of every conversion and mask the core
    /// makes, and values just around the log's own sizes.
    func value(_ random: inout SplitMix64) -> UInt64 {
        let edges: [UInt64] = [0, 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 47), (1 << 48) - 1, 1 << 48,
                               1 << 62, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, .max - 1, .max]
        let near: [UInt64] = [dataSize &- 1, dataSize, dataSize + 1, fileSize &- 1, fileSize + 1, cursor &- 1, cursor + 1,
                              dataSize / 2, 4096]
        switch random.below(10) {
        case 0..<5: return edges[random.below(edges.count)]
        case 5..<8: return near[random.below(near.count)]
        case 8: return UInt64(random.below(Int(dataSize) + 1))
        default: return random.next()
        }
    }

    /// A value for an offset that is first cut to the 48 offset bits of a cursor or slot.
    func offset(_ random: inout SplitMix64) -> UInt64 { value(&random) & Cursor.offsetMask }

    func value32(_ random: inout SplitMix64) -> UInt64 {
        let edges: [UInt64] = [0, 1, 2, 3, 1 << 31, (1 << 31) - 1, (1 << 32) - 1, 91, 92, 93, 999, 1000, 1001, UInt64(getpid())]
        return random.below(4) == 0 ? random.next() & 0xFFFF_FFFF : edges[random.below(edges.count)]
    }

    func value(for field: Field, _ random: inout SplitMix64) -> UInt64 {
        switch field.width {
        case 1: return random.next() & 0xFF
        case 4: return value32(&random)
        default: return value(&random)
        }
    }
}

/// A recipe: the fields that mean something together, with boundary values.
enum Recipe: CaseIterable {
    case page0, cursorWord, slots, holes, handles, rotation, counters, voidPoints, identity, locks

    /// The writer table and hole table most (their values are used unchecked the most), the
    /// header fields that make the log be refused least.
    static let weighted: [Recipe] = [.page0, .cursorWord, .slots, .slots, .slots, .holes, .holes, .handles, .handles,
                                     .rotation, .rotation, .counters, .counters, .voidPoints, .identity, .locks]

    func changes(_ p: Pristine, _ random: inout SplitMix64) -> [Change] {
        typealias L = MetadataLayout
        var out: [Change] = []
        func set(_ field: Field, _ value: UInt64) { out.append(Change(field: field, value: value)) }
        switch self {
        case .page0:
            for _ in 0..<(1 + random.below(4)) {
                let field = Fields.page0[random.below(Fields.page0.count)]
                set(field, p.value(for: field, &random))
            }
        case .cursorWord:
            let flags = [0, Cursor.retiredBit, Cursor.sealBit, Cursor.flagMask][random.below(4)]
            let gen = random.below(2) == 0 ? 0 : UInt64(random.below(0x4000))
            set(Fields.cursor, Cursor.make(offset: p.offset(&random), gen: gen, flags: flags))
            if random.below(2) == 0 { set(Fields.fileSize, p.value(&random)) }
            if random.below(3) == 0 { set(Field(name: "trimCursor", offset: L.trimCursorOffset, width: 8), p.value(&random)) }
        case .slots:
            var highest = 0
            for _ in 0..<(1 + random.below(2)) {
                let i = Fields.pickSlot(&random)
                highest = max(highest, i)
                // Mostly a start inside the records (a reservation a writer could have had).
                let start = random.below(3) == 0 ? p.offset(&random) : [0, 1, p.dataSize / 2, p.dataSize &- 1, p.dataSize][random.below(5)]
                let gen = random.below(2) == 0 ? 0 : UInt64(random.below(0x4000))
                let state: UInt64
                switch random.below(4) {
                case 0: state = Slot.inFlight | Slot.exact | (gen << Cursor.genShift) | start  // died copying [start, end)
                case 1: state = Slot.inFlight | start  // died before publishing its range
                case 2: state = start  // idle
                default: state = p.value(&random)
                }
                set(Fields.slot(i, "state"), state)
                if random.below(4) != 0 { set(Fields.slot(i, "end"), p.value(&random)) }
                for word in ["pid", "tid", "claims"] where random.below(4) == 0 {
                    let field = Fields.slot(i, word)
                    set(field, p.value(for: field, &random))
                }
            }
            // The high-water mark that makes readers and recovery look at the slot, or a bad one.
            set(Fields.slotHighWater, random.below(4) == 0 ? p.value(&random) : UInt64(highest + 1))
        case .holes:
            let count: UInt64 = [1, 1, 2, 3, UInt64(L.holeCapacity), UInt64(L.holeCapacity + 1), p.value(&random)][random.below(7)]
            set(Fields.holeCount, count)
            let entries = Int(min(count, UInt64(L.holeCapacity)))
            for _ in 0..<(1 + random.below(3)) where entries > 0 {
                let i = random.below(2) == 0 ? entries - 1 : random.below(min(entries, 3))
                set(Fields.hole(i, end: false), p.value(&random))
                set(Fields.hole(i, end: true), p.value(&random))
            }
            if random.below(2) == 0 { set(Fields.holeReach, p.value(&random)) }
            if random.below(3) == 0 { set(Fields.holesDropped, p.value(&random)) }
        case .handles:
            for _ in 0..<(1 + random.below(2)) {
                let i = Fields.pickHandle(&random)
                set(Fields.handle(i, "inUse"), random.below(3) == 0 ? p.value32(&random) : 1)
                set(Fields.handle(i, "pid"), p.value32(&random))
                set(Fields.handle(i, "openedAt"), p.value(&random))
            }
        case .rotation:
            if random.below(2) == 0 {
                set(Fields.cursor, Cursor.make(offset: random.below(2) == 0 ? p.cursor : p.offset(&random), gen: 0, flags: Cursor.retiredBit))
            }
            for field in [Fields.retiredAt, Fields.rotations, Fields.rotateAtBytes, Fields.crossingEnd] where random.below(2) == 0 {
                set(field, p.value(&random))
            }
            let names = ["fuzz.log.20261203T000000Z", "x", "../escape", "/etc/passwd", "fuzz.log", "fuzz.log.mmlog", ".", "a\u{0}b",
                         String(repeating: "n", count: 1000)]
            let name = Array(names[random.below(names.count)].utf8)
            for (k, byte) in name.enumerated() { set(Fields.retiredNameByte(k), UInt64(byte)) }
            let lengths: [UInt64] = [UInt64(name.count), UInt64(name.count), 0, 1, 999, 1000, 1001, (1 << 32) - 1]
            set(Fields.retiredNameLength, lengths[random.below(lengths.count)])
        case .counters:
            for _ in 0..<(1 + random.below(3)) {
                let field = Fields.counters[random.below(Fields.counters.count)]
                set(field, p.value(for: field, &random))
            }
        case .voidPoints:
            let gen = UInt64(1 + random.below(80))
            set(Fields.cursor, Cursor.make(offset: random.below(2) == 0 ? p.cursor : p.offset(&random), gen: gen))
            for _ in 0..<(1 + random.below(3)) {
                let i = random.below(2) == 0 ? Int(gen % UInt64(L.voidPointCount)) : random.below(L.voidPointCount)
                set(Fields.voidPoint(i), p.value(&random))
            }
        case .locks:
            // Where this header's locks are: a region of the lock file, and the file's name.
            let regions: [UInt64] = [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 1 << 46, (1 << 46) + (1 << 16), 1 << 50, .max]
            set(Fields.lockRegion, random.below(3) == 0 ? p.value(&random) : regions[random.below(regions.count)])
            if random.below(2) == 0 {
                let names = [".fuzz.log.mmlog-lock", "fuzz.log", "fuzz.log.mmlog", "../x.mmlog-lock", "/tmp/x", ".", ""]
                let name = Array(names[random.below(names.count)].utf8)
                for (k, byte) in name.enumerated() { set(Fields.lockNameByte(k), UInt64(byte)) }
                let lengths: [UInt64] = [UInt64(name.count), UInt64(name.count), 0, 92, 93, (1 << 32) - 1]
                set(Fields.lockNameLength, lengths[random.below(lengths.count)])
            }
        case .identity:
            // The header no longer records this data file or this boot: recovery from the data.
            let field = [Fields.page0[11], Fields.page0[12], Fields.page0[13]][random.below(3)]
            set(field, random.next())
            if random.below(2) == 0 { set(Fields.counters[0], p.value(&random)) }  // durable
        }
        return out
    }
}

/// One case's corruption: structured changes, or one of the raw corruptions of the first fuzzer.
struct Corruption {
    var changes: [Change] = []
    var raw: String?

    var description: String { raw ?? changes.map(\.description).joined(separator: " ") }

    static func make(_ p: Pristine, headerSize: Int, _ random: inout SplitMix64) -> (Corruption, (inout [UInt8]) -> Void) {
        if random.below(8) == 0 { return rawCorruption(headerSize: headerSize, &random) }
        var corruption = Corruption()
        for _ in 0..<(1 + random.below(3)) {
            let recipe = Recipe.weighted[random.below(Recipe.weighted.count)]
            corruption.changes += recipe.changes(p, &random)
        }
        for _ in 0..<random.below(3) {
            let field = Fields.any(&random)
            corruption.changes.append(Change(field: field, value: p.value(for: field, &random)))
        }
        corruption.mergeChanges()
        let changes = corruption.changes
        return (corruption, { bytes in for change in changes { apply(change, to: &bytes) } })
    }

    /// One change per field: the last value set wins (in the place of the first).
    mutating func mergeChanges() {
        var last: [Field: UInt64] = [:]
        for change in changes { last[change.field] = change.value }
        var seen = Set<Field>()
        changes = changes.compactMap { seen.insert($0.field).inserted ? Change(field: $0.field, value: last[$0.field]!) : nil }
    }

    static func apply(_ change: Change, to bytes: inout [UInt8]) {
        for k in 0..<change.field.width where change.field.offset + k < bytes.count {
            bytes[change.field.offset + k] = UInt8(truncatingIfNeeded: change.value >> (8 * UInt64(k)))
        }
    }

    /// Truncation, bit flips, a random page, trailing garbage.
    static func rawCorruption(headerSize: Int, _ random: inout SplitMix64) -> (Corruption, (inout [UInt8]) -> Void) {
        switch random.below(4) {
        case 0:
            let length = random.below(headerSize)
            return (Corruption(raw: "truncated to \(length)"), { $0 = Array($0[0..<length]) })
        case 1:
            let flips = (0..<(1 + random.below(8))).map { _ in
                random.below(min(headerSize, MetadataLayout.headerSize + 4 * MetadataLayout.slotSize) * 8)
            }
            return (Corruption(raw: "bits flipped at \(flips)"), { bytes in for bit in flips { bytes[bit / 8] ^= UInt8(1 << (bit % 8)) } })
        case 2:
            let seed = random.next()
            return (Corruption(raw: "every byte random"), { bytes in
                var r = SplitMix64(seed: seed)
                for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: r.next()) }
            })
        default:
            let extra = 1 + random.below(8192)
            let seed = random.next()
            return (Corruption(raw: "\(extra) bytes of garbage appended"), { bytes in
                var r = SplitMix64(seed: seed)
                bytes += (0..<extra).map { _ in UInt8(truncatingIfNeeded: r.next()) }
            })
        }
    }
}
