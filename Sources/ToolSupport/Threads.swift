#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(t)` for t in 0..<count, each on a thread of its own (on this one when count is
/// 1), and waits for them all. Returns pthread_create's error when a thread could not start
/// (the threads already started are still waited for).
@discardableResult
public func onThreads(_ count: Int, _ body: @escaping (Int) -> Void) -> Int32 {
    if count == 1 {
        body(0)
        return 0
    }
    var threads: [pthread_t] = []
    var failure: Int32 = 0
    for t in 0..<count {
        let job = Unmanaged.passRetained(ThreadJob { body(t) }).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadJob>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, job)
        if rc != 0 {
            Unmanaged<ThreadJob>.fromOpaque(job).release()
            failure = rc
            break
        }
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
    return failure
}

private final class ThreadJob {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}
