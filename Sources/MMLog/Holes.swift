import Atomics

/// The hole table: byte ranges of the data file that hold no record (a writer died copying
/// into its reservation, an append failed after reserving, a crash left bytes that never
/// reached the disk). Readers skip them. Writers add entries under the grow lock (or alone,
/// under the init lock); readers read them without a lock: an entry is complete before
/// `holeCount` (releasing) counts it. Entries are only appended, except that the newest one
/// may grow to take in an adjacent range.
extension Metadata {
    /// Entries kept for clips: a table full of holes still records the voids that give ranges
    /// back (a clip lost would hide the records written there later from every reader).
    static let clipReserve = 64

    /// Records [start, end) as a hole. The caller holds the grow lock, or is alone. When the
    /// table is full (4,032 holes: years of crashes), the range is filled in the data file
    /// instead, with spaces and a newline (a blank line, as in a finished rotated file): no
    /// live writer owns it, and a reader then reads a blank line rather than NUL bytes.
    func recordHole(_ start: UInt64, _ end: UInt64, dataFD: Int32) {
        guard end > start else { return }
        let count = min(Int(clamping: holeCount.load(ordering: .relaxed)), MetadataLayout.holeCapacity)
        if count > 0 {
            let last = holeEntry(count - 1)
            if last.end != 0 && last.start <= start && start <= last.end {
                // Adjacent to (or inside) the newest hole: widen it. A reader sees the old or
                // the new end, both holes.
                if end > last.end { setHoleEntry(count - 1, start: last.start, end: end) }
                holeReach.store(max(holeReach.load(ordering: .relaxed), end), ordering: .relaxed)
                return
            }
        }
        guard count < MetadataLayout.holeCapacity - Self.clipReserve else {
            holesDropped.wrappingIncrement(ordering: .relaxed)
            fillBlank(start, min(end, fileSize.load(ordering: .acquiring)), dataFD: dataFD)
            return
        }
        setHoleEntry(count, start: start, end: end)
        holeCount.store(UInt64(count + 1), ordering: .releasing)  // pairs with readers' acquiring load
        holeReach.store(max(holeReach.load(ordering: .relaxed), end), ordering: .relaxed)
    }

    /// Turns the NUL bytes of [start, end) into spaces, and its last byte, if NUL, into a
    /// newline: a dead writer's range reads as a blank line (or the part of its record it
    /// copied, then blanks). Bytes that are not NUL are left alone, so a hole a hostile header
    /// lays over records changes none of them. Best effort: on failure the zeros stay.
    func fillBlank(_ start: UInt64, _ end: UInt64, dataFD: Int32) {
        guard end > start else { return }
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
        defer { block.deallocate() }
        var position = start
        while position < end {
            let count = Int(min(UInt64(block.count), end - position))
            let buffer = UnsafeMutableRawBufferPointer(rebasing: block[0..<count])
            guard let n = try? Sys.preadFully(dataFD, buffer, Int(position), "hole"), n == count else { return }
            var changed = false
            for k in 0..<count where buffer[k] == 0 {
                buffer[k] = position + UInt64(k) == end - 1 ? UInt8(ascii: "\n") : UInt8(ascii: " ")
                changed = true
            }
            if changed {
                guard (try? Sys.pwriteAll(dataFD, UnsafeRawBufferPointer(buffer), Int(position), "hole")) != nil else { return }
            }
            position += UInt64(count)
        }
    }

    /// Records that nothing at or above `point` is a hole any more (a void gave that range
    /// back to new reservations). Only when some recorded hole reaches past it.
    func recordClip(at point: UInt64) {
        guard holeReach.load(ordering: .relaxed) > point else { return }
        let count = Int(clamping: holeCount.load(ordering: .relaxed))
        guard count < MetadataLayout.holeCapacity else {
            holesDropped.wrappingIncrement(ordering: .relaxed)
            return
        }
        setHoleEntry(count, start: point, end: 0)
        holeCount.store(UInt64(count + 1), ordering: .releasing)
        holeReach.store(point, ordering: .relaxed)
    }

    /// Rewrites the table as `recordedHoles()` when it holds entries that cannot be holes (past
    /// the largest log, or past the cursor once clips apply): left in place, such an entry
    /// would become "valid" once appends pass it, and hide their records. Only by an opener
    /// alone (recovery), and only then, since a reader reading the table meanwhile may miss a
    /// hole for one read.
    func dropImpossibleHoles() -> Bool {
        let count = min(Int(clamping: holeCount.load(ordering: .acquiring)), MetadataLayout.holeCapacity)
        let kept = recordedHoles()
        let reach = Cursor.offset(cursor.load(ordering: .acquiring))
        var impossible = false
        for i in 0..<count {
            let entry = holeEntry(i)
            if entry.end != 0 && (entry.start > MetadataLayout.maxLogSize || entry.end > MetadataLayout.maxLogSize
                                  || (entry.end > reach && !kept.contains { $0.lowerBound <= entry.start && entry.start < $0.upperBound })) {
                impossible = true
            }
        }
        guard impossible, kept.count <= MetadataLayout.holeCapacity else { return false }
        for (i, hole) in kept.enumerated() { setHoleEntry(i, start: hole.lowerBound, end: hole.upperBound) }
        holeCount.store(UInt64(kept.count), ordering: .releasing)
        holeReach.store(kept.last?.upperBound ?? 0, ordering: .relaxed)
        return true
    }

    /// The recorded holes, clips applied, sorted and merged; none reaches past the cursor (a
    /// hole is recorded below it, and a void that gives a range back records a clip first).
    func recordedHoles() -> [Range<UInt64>] {
        let count = min(Int(clamping: holeCount.load(ordering: .acquiring)), MetadataLayout.holeCapacity)
        let reach = Cursor.offset(cursor.load(ordering: .acquiring))
        var holes: [Range<UInt64>] = []
        for i in 0..<count {
            let entry = holeEntry(i)
            // Past the largest log, an entry is corrupt or hostile: no hole (it would hide the
            // records after it) and no clip.
            guard entry.start <= MetadataLayout.maxLogSize && entry.end <= MetadataLayout.maxLogSize else { continue }
            if entry.end == 0 {
                holes = holes.compactMap { $0.lowerBound < entry.start ? $0.lowerBound..<min($0.upperBound, entry.start) : nil }
            } else if entry.end > entry.start {
                holes.append(entry.start..<entry.end)
            }
        }
        // What still reaches past the cursor once the clips are applied was never a hole
        // (a corrupt or hostile entry): dropped, not cut, so it hides no record.
        return mergeRanges(holes.filter { $0.upperBound <= reach })
    }
}

/// Sorts ranges and merges the ones that overlap or touch.
func mergeRanges(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
    var merged: [Range<UInt64>] = []
    for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) where !range.isEmpty {
        if let last = merged.last, range.lowerBound <= last.upperBound {
            merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
        } else {
            merged.append(range)
        }
    }
    return merged
}
