#if canImport(Glibc)
import Glibc
#endif

/// A thread that prefaults the chunk after the one its handle last mapped, so the kernel's
/// page allocation for it overlaps the appends instead of stalling the first one to reach it
/// (`Options.prefetch`). Requests are "chunk k": later requests supersede earlier ones, and a
/// request is dropped if a later one arrives first. Best effort: it never grows the file
/// (chunks it prefaults are already allocated) and never writes a byte, so whatever it does
/// or fails to do, the data file's contents are the appenders' alone.
final class Prefetcher: @unchecked Sendable {
    // @unchecked: `wanted`, `done` and `stopping` are only touched under `mutex`.

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var wanted = -1
    private var done = -1
    private var stopping = false
    private var thread = pthread_t()
    private let work: (Int) -> Void

    /// Starts the thread; nil when it cannot be created (the handle then works without it).
    init?(work: @escaping (Int) -> Void) {
        self.work = work
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        let context = Unmanaged.passRetained(self).toOpaque()
        let created = pthread_create(&thread, nil, { context in
            let me = Unmanaged<Prefetcher>.fromOpaque(context!).takeRetainedValue()
            me.run()
            return nil
        }, context)
        if created != 0 {
            Unmanaged<Prefetcher>.fromOpaque(context).release()
            return nil
        }
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Asks for chunk `k` to be prefaulted.
    func request(_ k: Int) {
        pthread_mutex_lock(mutex)
        if k > wanted {
            wanted = k
            pthread_cond_signal(condition)
        }
        pthread_mutex_unlock(mutex)
    }

    /// Stops the thread and waits for it (and any prefault in progress) to finish.
    func stop() {
        pthread_mutex_lock(mutex)
        if stopping {
            pthread_mutex_unlock(mutex)
            return
        }
        stopping = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
        pthread_join(thread, nil)
    }

    private func run() {
        pthread_mutex_lock(mutex)
        while true {
            while !stopping && wanted <= done { pthread_cond_wait(condition, mutex) }
            if stopping { break }
            let k = wanted
            done = k
            pthread_mutex_unlock(mutex)
            work(k)
            pthread_mutex_lock(mutex)
        }
        pthread_mutex_unlock(mutex)
    }
}
