#if canImport(Glibc)
import Glibc
#endif
import CBackends

/// io_uring (liburing) writes on a buffered `O_APPEND` descriptor, `depth` records in flight.
///
/// The descriptor's O_APPEND reaches each write as IOCB_APPEND, so the kernel appends at the
/// end of the file whatever offset the submission carries. It carries 0, as with aio, not -1:
/// -1 means "the file position", which the kernel would read and update for every write
/// (racily with several in flight) to no effect. With depth > 1 writes may complete, and so
/// land, out of order.
final class URingBackend: AppendBackend {
    static let key = "uring"
    static let category = "io_uring"

    private let fd: Int32
    private let path: String
    private let context: OpaquePointer
    private var isOpen = true

    static func preservesOrder(config: BackendConfig) -> Bool { config.depth <= 1 }

    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        var context: OpaquePointer?
        let rc = cb_uring_open(UInt32(max(config.depth, 1)), 1, &context)
        if rc < 0 {
            return "io_uring unavailable (io_uring_queue_init(\(config.depth)): \(String(cString: strerror(-rc))))"
                + (rc == -EPERM ? "; see /proc/sys/kernel/io_uring_disabled" : "")
        }
        cb_uring_close(context)
        return nil
    }

    init(config: BackendConfig) throws {
        path = config.path
        fd = try openForAppend(path)
        var context: OpaquePointer?
        let rc = cb_uring_open(UInt32(max(config.depth, 1)), config.recordSize, &context)
        if rc < 0 {
            _ = Glibc.close(fd)
            throw HarnessError("io_uring_queue_init(\(config.depth))", errno: -rc)
        }
        self.context = context!
    }

    deinit {
        if isOpen {
            cb_uring_close(context)
            _ = Glibc.close(fd)
        }
    }

    func append(_ record: UnsafeRawBufferPointer) throws {
        let result = cb_uring_append(context, fd, record.baseAddress, record.count, 0)
        if result.step != CB_OK { throw failure(result) }
    }

    func finish() throws {
        let result = cb_uring_drain(context)
        if result.step != CB_OK { throw failure(result) }
    }

    func sync() throws {
        try finish()
        try syncData(fd, path)
    }

    func close() throws {
        guard isOpen else { return }
        isOpen = false
        cb_uring_close(context)  // lets writes still in flight finish first
        try closeChecked(fd, path)
    }

    private func failure(_ result: cb_result) -> HarnessError {
        HarnessError(result, path: path, submit: "io_uring_submit", wait: "io_uring_wait_cqe", write: "io_uring write")
    }
}
