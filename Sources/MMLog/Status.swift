#if canImport(Glibc)
import Glibc
#endif
import Atomics

/// A snapshot of a log's shared state (what `mmlog stat` prints).
public struct MMLogStatus: Sendable, Codable {
    public struct Handle: Sendable, Codable {
        public var pid: Int
        public var openedAt: Int  // seconds since the epoch
        public var alive: Bool
    }

    public struct Writer: Sendable, Codable {
        public var slot: Int
        public var pid: Int
        public var tid: Int
        /// "idle", "in flight" (a reservation being copied) or "reserving" (in flight, before
        /// its exact range is known).
        public var state: String
        /// In flight: the reservation's start (or a lower bound of it); idle: the end of the
        /// writer's last append.
        public var offset: Int
        public var end: Int?
        /// Whether the slot's owner still holds it (false: its process is gone).
        public var alive: Bool
    }

    public var path: String
    public var metadataPath: String
    /// 0: no metadata (a plain file).
    public var formatVersion: Int
    public var chunkSize: Int
    /// Where the next reservation goes.
    public var cursor: Int
    /// Every byte below it is final.
    public var committed: Int
    /// Bytes allocated in the data file (the header's view).
    public var allocated: Int
    /// The data file's size now.
    public var dataFileSize: Int
    /// Every byte below it is on the device (from the last `sync()`).
    public var durable: Int
    public var generation: Int
    public var sealed: Bool
    public var retired: Bool
    public var retiredAt: Int?
    /// Whether the last handle to detach closed cleanly (and trimmed); false while attached
    /// or after a crash.
    public var lastCloseClean: Bool
    public var writersAttached: Bool
    public var handles: [Handle]
    public var writers: [Writer]
    public var liveWriters: Int
    public var deadWriters: Int
    public var holes: [[Int]]
    public var holesDropped: Int
    public var recoveries: Int
    public var rotations: Int
    public var flushes: Int
    public var syncCalls: Int
    /// Whether the header records this data file's identity and this boot (false: the next
    /// opener alone recovers from the data file).
    public var headerIsLive: Bool

    init(reader: MMLogReader, dataFD: Int32, metadata: ReaderMetadata?, committed: UInt64,
         holes: [Range<UInt64>], deadSlots: Set<DeadSlot>) throws(MMLogError) {
        let size = try Sys.size(dataFD, reader.path)
        path = reader.path
        metadataPath = reader.metadataPath
        dataFileSize = size
        self.committed = Int(clamping: committed)
        self.holes = holes.map { [Int(clamping: $0.lowerBound), Int(clamping: $0.upperBound)] }
        guard let metadata else {
            formatVersion = 0; chunkSize = 0; cursor = size; allocated = size; durable = 0; generation = 0
            sealed = false; retired = false; retiredAt = nil; lastCloseClean = true; writersAttached = false
            handles = []; writers = []; liveWriters = 0; deadWriters = 0; holesDropped = 0; recoveries = 0
            rotations = 0; flushes = 0; syncCalls = 0; headerIsLive = true
            return
        }
        let header = metadata.header, liveness = metadata.liveness
        let word = header.cursor.load(ordering: .acquiring)
        formatVersion = Int(clamping: header.version)
        chunkSize = Int(clamping: header.chunkSize)
        cursor = Int(clamping: Cursor.offset(word))
        allocated = Int(clamping: header.fileSize.load(ordering: .acquiring))
        sealed = word & Cursor.sealBit != 0
        writersAttached = try liveness.attached(header)
        guard header.version != MetadataLayout.version1 else {
            durable = 0; generation = 0; retired = false; retiredAt = nil; lastCloseClean = !writersAttached
            handles = []; writers = []; liveWriters = 0; deadWriters = 0; holesDropped = 0; recoveries = 0
            rotations = 0; flushes = 0; syncCalls = 0; headerIsLive = true
            return
        }
        durable = Int(clamping: header.durable.load(ordering: .acquiring))
        generation = Int(clamping: Cursor.gen(word))
        retired = word & Cursor.retiredBit != 0
        retiredAt = retired ? Int(clamping: header.retiredAt.load(ordering: .acquiring)) : nil
        lastCloseClean = header.clean.load(ordering: .relaxed) == 1
        var handles: [Handle] = []
        for i in 0..<MetadataLayout.handleCount {
            let entry = header.handleEntry(i)
            guard entry.load(fromByteOffset: 4, as: UInt32.self) != 0 else { continue }
            let alive = try liveness.handleAlive(header, i)
            handles.append(Handle(pid: Int(entry.load(fromByteOffset: 0, as: Int32.self)),
                                  openedAt: Int(clamping: entry.load(fromByteOffset: 8, as: UInt64.self)), alive: alive))
        }
        self.handles = handles
        var writers: [Writer] = []
        for i in header.activeSlots {
            let state = header.slotState(i).load(ordering: .acquiring)
            let owner = header.slotOwner(i)
            let alive = try liveness.slotAlive(header, i)
            // List the slots in use: owned now, or left in flight by a writer that died.
            if !alive && state & Slot.inFlight == 0 { continue }
            let inFlight = state & Slot.inFlight != 0, exact = state & Slot.exact != 0
            writers.append(Writer(slot: i, pid: Int(clamping: owner.pid), tid: Int(clamping: owner.tid),
                                  state: inFlight ? (exact ? "in flight" : "reserving") : "idle",
                                  offset: Int(clamping: Cursor.offset(state)),
                                  end: inFlight && exact ? Int(clamping: header.slotEnd(i).load(ordering: .relaxed)) : nil,
                                  alive: alive))
        }
        self.writers = writers
        liveWriters = writers.filter { $0.alive }.count
        deadWriters = writers.filter { !$0.alive && $0.state != "idle" }.count
        holesDropped = Int(clamping: header.holesDropped.load(ordering: .relaxed))
        recoveries = Int(clamping: header.recoveries)
        rotations = Int(clamping: header.rotations.load(ordering: .relaxed))
        flushes = Int(clamping: header.flushes.load(ordering: .relaxed))
        syncCalls = Int(clamping: header.syncCalls.load(ordering: .relaxed))
        let identity = try Sys.identity(dataFD, reader.path)
        headerIsLive = header.dataDevice == identity.device && header.dataInode == identity.inode && header.bootID == Sys.bootID
    }
}
