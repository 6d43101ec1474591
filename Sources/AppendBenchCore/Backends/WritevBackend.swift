#if canImport(Glibc)
import Glibc
#endif
import ToolSupport

/// `writev()` on an `O_APPEND` descriptor, `batch` records per call. One `writev` is one
/// append of all its bytes, so a batch lands whole and records never interleave.
final class WritevBackend: AppendBackend {
    static let key = "writev"
    static let category = "writev() with O_APPEND"

    private let fd: Int32
    private let path: String
    private let recordSize: Int
    private let batch: Int
    /// One iovec per record of a batch; with batch > 1 they point into `staging`.
    private let vectors: UnsafeMutablePointer<iovec>
    /// With batch > 1, copies of the gathered records (the caller reuses its buffer).
    private let staging: UnsafeMutableRawPointer?
    private var pending = 0
    private var isOpen = true

    /// A batch is one call, so it cannot exceed the kernel's iovec limit (1024 on Linux).
    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        let limit = sysconf(Int32(_SC_IOV_MAX))
        return config.batch > limit ? "writev takes at most \(limit) iovecs; batch \(config.batch) is one call" : nil
    }

    init(config: BackendConfig) throws {
        if let reason = Self.unsupportedReason(directory: "", config: config) { throw HarnessError(reason) }
        path = config.path
        recordSize = config.recordSize
        batch = max(config.batch, 1)
        fd = try openForAppend(path)
        vectors = .allocate(capacity: batch)
        if batch > 1 {
            let staging = UnsafeMutableRawPointer.allocate(byteCount: batch * recordSize, alignment: 64)
            for i in 0..<batch {
                vectors[i] = iovec(iov_base: staging + i * recordSize, iov_len: recordSize)
            }
            self.staging = staging
        } else {
            staging = nil
        }
    }

    deinit {
        if isOpen {
            release()
            _ = Glibc.close(fd)
        }
    }

    func append(_ record: UnsafeRawBufferPointer) throws {
        guard let staging else {
            // Batch 1 writes straight from the caller's buffer, as `write` would.
            vectors.pointee = iovec(iov_base: UnsafeMutableRawPointer(mutating: record.baseAddress), iov_len: record.count)
            return try writePending(1)
        }
        (staging + pending * recordSize).copyMemory(from: record.baseAddress!, byteCount: recordSize)
        pending += 1
        if pending == batch { try writePending(pending) }
    }

    /// One writev of the first `count` iovecs. A short append would leave a torn record that
    /// another writer lands after, so it is an error, not something to complete.
    private func writePending(_ count: Int) throws {
        pending = 0
        let expected = count * recordSize
        let n = retryingInterrupts { writev(fd, vectors, Int32(count)) }
        if n < 0 { throw HarnessError.system("writev(\(path), \(count) x \(recordSize) bytes)") }
        if n != expected { throw HarnessError("writev(\(path), \(expected) bytes) wrote \(n) bytes") }
    }

    func finish() throws {
        if pending > 0 { try writePending(pending) }
    }

    func sync() throws {
        try finish()
        try syncData(fd, path)
    }

    func close() throws {
        guard isOpen else { return }
        isOpen = false
        release()
        try closeChecked(fd, path)
    }

    private func release() {
        vectors.deallocate()
        staging?.deallocate()
    }
}
