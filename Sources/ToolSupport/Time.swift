#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
@inlinable @inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// CLOCK_REALTIME in nanoseconds (what `date +%s%N` prints): for starting processes together.
public func realtimeNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Sleeps until CLOCK_MONOTONIC reads `deadline` (nanoseconds), resuming after signals.
/// The corresponding C function is `clock_nanosleep` with `TIMER_ABSTIME`.
public func sleepUntil(_ deadline: UInt64) {
    var at = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
    _ = retryingInterrupts {
        // clock_nanosleep returns its error instead of setting errno.
        let rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nil)
        if rc == 0 { return 0 }
        errno = rc
        return -1
    }
}

/// Sleeps for `nanoseconds`, resuming after signals.
public func sleepNanoseconds(_ nanoseconds: UInt64) {
    sleepUntil(monotonicNanoseconds() &+ nanoseconds)
}

/// Now in UTC, as 2026-11-24T17:01:32Z.
public func utcTimestamp() -> String {
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    let n = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
