#if canImport(Glibc)
import Glibc
#endif

/// The bytes of one log line while it is formatted: written once, in order, into memory that
/// the thread keeps from one event to the next (`Scratch`), then handed to
/// `MMLog.append` whole.
///
/// Growth is by `realloc`. When memory runs out the buffer stops writing and sets `failed`;
/// the handler then drops the event rather than append a truncated line.
struct LineBuffer {
    private(set) var base: UnsafeMutablePointer<UInt8>?
    private(set) var capacity: Int
    private(set) var count = 0
    private(set) var failed = false

    init(base: UnsafeMutablePointer<UInt8>?, capacity: Int) {
        self.base = base
        self.capacity = base == nil ? 0 : capacity
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Makes room for `extra` more bytes; false (and `failed`) when memory cannot be had.
    @inline(__always)
    private mutating func reserve(_ extra: Int) -> Bool {
        if count &+ extra <= capacity { return true }
        return grow(to: count + extra)
    }

    @inline(never)
    private mutating func grow(to needed: Int) -> Bool {
        if failed { return false }
        let newCapacity = max(needed, capacity * 2, 512)
        guard let grown = realloc(base, newCapacity) else {
            failed = true
            return false
        }
        base = grown.assumingMemoryBound(to: UInt8.self)
        capacity = newCapacity
        return true
    }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        guard reserve(1), let base else { return }
        base[count] = byte
        count &+= 1
    }

    mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard bytes.count > 0, reserve(bytes.count), let base, let source = bytes.baseAddress else { return }
        (base + count).update(from: source, count: bytes.count)
        count &+= bytes.count
    }

    /// Marks the line unusable (memory ran out for something it needed).
    mutating func fail() {
        failed = true
    }

    /// Puts `byte` at `index`, moving the bytes after it along by one.
    mutating func insert(_ byte: UInt8, at index: Int) {
        guard reserve(1), let base else { return }
        (base + index + 1).update(from: base + index, count: count - index)
        base[index] = byte
        count &+= 1
    }

    /// Appends ASCII known when the program was compiled (field names, punctuation).
    @inline(__always)
    mutating func append(_ text: StaticString) {
        append(UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Appends the UTF-8 of `text` unchanged (for text known to need no escaping).
    mutating func appendRaw(_ text: String) {
        withUTF8(of: text) { append($0) }
    }

    mutating func appendDecimal(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: UInt64.max has 20 digits
        withUnsafeMutableBytes(of: &digits) { raw in
            var n = value, i = raw.count
            repeat {
                i -= 1
                raw[i] = UInt8(truncatingIfNeeded: n % 10) &+ 0x30
                n /= 10
            } while n > 0
            append(UnsafeBufferPointer(rebasing: raw.bindMemory(to: UInt8.self)[i...]))
        }
    }

    mutating func appendDecimal(_ value: Int) {
        if value < 0 { append(UInt8(ascii: "-")) }
        appendDecimal(value.magnitude.toUInt64)
    }

    /// `value` in exactly `width` decimal digits, zero-padded (the value must fit).
    mutating func appendPadded(_ value: Int, width: Int) {
        guard reserve(width), let base else { return }
        var n = value
        for i in stride(from: width - 1, through: 0, by: -1) {
            base[count + i] = UInt8(truncatingIfNeeded: n % 10) &+ 0x30
            n /= 10
        }
        count &+= width
    }

}

private extension UInt {
    var toUInt64: UInt64 { UInt64(self) }
}

/// Gregorian (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): plain arithmetic, so no `gmtime_r` per event.
func civilDate(daysSinceEpoch: Int) -> (year: Int, month: Int, day: Int) {
    let z = daysSinceEpoch + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let shiftedMonth = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
    let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
    return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
}

/// Calls `body` with the UTF-8 of `text`, without copying it where the string is native.
@inline(__always)
func withUTF8<R>(of text: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    if let result = text.utf8.withContiguousStorageIfAvailable(body) { return result }
    var copy = text
    return copy.withUTF8(body)
}

// MARK: - Memory kept per thread

/// The calendar part of the last second formatted on a thread (`2026-11-24T17:01:32`).
struct SecondCache {
    var second = Int.min
    var text: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 19 bytes used
}

/// What a thread keeps between events: the line's memory, the metadata entries' memory, the
/// last second formatted, and whether an event is being formatted right now.
struct ThreadSlot {
    var storage: UnsafeMutablePointer<UInt8>?
    var capacity: Int
    var entries: UnsafeMutableRawPointer?
    var entryCapacity: Int
    var busy: Bool
    var seconds: SecondCache
}

/// A thread's memory is freed when the thread exits.
private let threadSlotKey: pthread_key_t = {
    var key = pthread_key_t()
    let rc = pthread_key_create(&key) { raw in
        guard let slot = raw?.assumingMemoryBound(to: ThreadSlot.self) else { return }
        free(slot.pointee.storage)
        free(slot.pointee.entries)
        free(slot)
    }
    precondition(rc == 0, "pthread_key_create: \(rc)")
    return key
}()

/// The memory one event is formatted in: the thread's own (`acquire`), so that a thread
/// formats its lines without allocating once its buffers are big enough, or, for a call made
/// while the thread's is in use (a metadata value's `description` that logs, say), memory of
/// its own, freed by `release`.
struct Scratch {
    var line: LineBuffer
    private(set) var entries: UnsafeMutablePointer<MetadataEntry>?
    private(set) var entryCapacity: Int
    var seconds: SecondCache
    private let slot: UnsafeMutablePointer<ThreadSlot>?

    /// Memory a thread keeps after a line: a line longer than this gives its memory back.
    static let retainedCapacity = 64 << 10

    static func acquire() -> Scratch {
        var slot = pthread_getspecific(threadSlotKey)?.assumingMemoryBound(to: ThreadSlot.self)
        if slot == nil, let made = calloc(1, MemoryLayout<ThreadSlot>.stride) {
            let fresh = made.assumingMemoryBound(to: ThreadSlot.self)
            fresh.initialize(to: ThreadSlot(storage: nil, capacity: 0, entries: nil, entryCapacity: 0, busy: false,
                                            seconds: SecondCache()))
            if pthread_setspecific(threadSlotKey, made) == 0 {
                slot = fresh
            } else {
                free(made)
            }
        }
        guard let slot, !slot.pointee.busy else {
            return Scratch(line: LineBuffer(base: nil, capacity: 0), entries: nil, entryCapacity: 0,
                           seconds: SecondCache(), slot: nil)
        }
        slot.pointee.busy = true
        return Scratch(line: LineBuffer(base: slot.pointee.storage, capacity: slot.pointee.capacity),
                       entries: slot.pointee.entries?.assumingMemoryBound(to: MetadataEntry.self),
                       entryCapacity: slot.pointee.entryCapacity, seconds: slot.pointee.seconds, slot: slot)
    }

    /// Gives the memory back to the thread (or frees it). The entries must be deinitialized.
    mutating func release() {
        guard let slot else {
            free(line.base)
            free(entries)
            return
        }
        if line.capacity > Self.retainedCapacity {
            free(line.base)
            slot.pointee.storage = nil
            slot.pointee.capacity = 0
        } else {
            slot.pointee.storage = line.base
            slot.pointee.capacity = line.capacity
        }
        slot.pointee.entries = UnsafeMutableRawPointer(entries)
        slot.pointee.entryCapacity = entryCapacity
        slot.pointee.seconds = seconds
        slot.pointee.busy = false
    }

    /// Uninitialized room for `count` entries; nil when memory cannot be had.
    mutating func entryStorage(_ count: Int) -> UnsafeMutablePointer<MetadataEntry>? {
        if count <= entryCapacity { return entries }
        let newCapacity = max(count, 2 * entryCapacity, 16)
        guard let grown = realloc(entries, newCapacity * MemoryLayout<MetadataEntry>.stride) else { return nil }
        entries = grown.bindMemory(to: MetadataEntry.self, capacity: newCapacity)
        entryCapacity = newCapacity
        return entries
    }
}

extension LineBuffer {
    /// RFC 3339 UTC time with microseconds: `2026-11-24T17:01:32.123456Z`. The calendar part
    /// is formatted once per second (per thread) and copied after that.
    mutating func appendTimestamp(_ cache: inout SecondCache) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let seconds = Int(now.tv_sec)
        if seconds == cache.second {
            withUnsafeBytes(of: cache.text) { append(UnsafeBufferPointer(start: $0.bindMemory(to: UInt8.self).baseAddress, count: 19)) }
        } else {
            let start = count
            appendCalendarSecond(seconds)
            if let base, count - start == 19 {
                withUnsafeMutableBytes(of: &cache.text) { $0.baseAddress!.copyMemory(from: base + start, byteCount: 19) }
                cache.second = seconds
            }
        }
        append(UInt8(ascii: "."))
        appendPadded(Int(now.tv_nsec) / 1000, width: 6)
        append(UInt8(ascii: "Z"))
    }

    /// `2026-11-24T17:01:32` for a time in seconds since 1970 (19 bytes).
    mutating func appendCalendarSecond(_ seconds: Int) {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        appendPadded(year, width: 4); append(UInt8(ascii: "-"))
        appendPadded(month, width: 2); append(UInt8(ascii: "-"))
        appendPadded(day, width: 2); append(UInt8(ascii: "T"))
        appendPadded(secondOfDay / 3600, width: 2); append(UInt8(ascii: ":"))
        appendPadded(secondOfDay / 60 % 60, width: 2); append(UInt8(ascii: ":"))
        appendPadded(secondOfDay % 60, width: 2)
    }
}
