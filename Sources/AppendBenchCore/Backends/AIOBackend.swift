#if canImport(Glibc)
import Glibc
#endif
import CBackends

/// Linux AIO (libaio) on a buffered `O_APPEND` descriptor, `depth` records in flight.
///
/// The descriptor's O_APPEND reaches each write as IOCB_APPEND, so the kernel appends at
/// the end of the file and ignores the offset (0 here). Buffered AIO on most filesystems
/// completes inside io_submit; the numbers show what the interface costs, not overlap.
/// With depth > 1 writes may complete, and so land, out of order.
final class AIOBackend: AppendBackend {
    static let key = "aio"
    static let category = "Linux AIO"

    private let fd: Int32
    private let path: String
    private let context: OpaquePointer
    private var isOpen = true

    static func preservesOrder(config: BackendConfig) -> Bool { config.depth <= 1 }

    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        var context: OpaquePointer?
        let rc = cb_aio_open(UInt32(max(config.depth, 1)), 1, &context)
        if rc < 0 { return "Linux AIO unavailable (io_setup(\(config.depth)): \(String(cString: strerror(-rc))))" }
        _ = cb_aio_close(context)
        return nil
    }

    init(config: BackendConfig) throws {
        path = config.path
        fd = try openForAppend(path)
        var context: OpaquePointer?
        let rc = cb_aio_open(UInt32(max(config.depth, 1)), config.recordSize, &context)
        if rc < 0 {
            _ = Glibc.close(fd)
            throw HarnessError("io_setup(\(config.depth))", errno: -rc)
        }
        self.context = context!
    }

    deinit {
        if isOpen {
            _ = cb_aio_close(context)
            _ = Glibc.close(fd)
        }
    }

    func append(_ record: UnsafeRawBufferPointer) throws {
        let result = cb_aio_append(context, fd, record.baseAddress, record.count, 0)
        if result.step != CB_OK { throw failure(result) }
    }

    func finish() throws {
        let result = cb_aio_drain(context)
        if result.step != CB_OK { throw failure(result) }
    }

    func sync() throws {
        try finish()
        try syncData(fd, path)
    }

    func close() throws {
        guard isOpen else { return }
        isOpen = false
        let rc = cb_aio_close(context)  // waits for writes still in flight
        try closeChecked(fd, path)
        if rc < 0 { throw HarnessError("io_destroy(\(path))", errno: -rc) }
    }

    private func failure(_ result: cb_result) -> HarnessError {
        HarnessError(result, path: path, submit: "io_submit", wait: "io_getevents", write: "aio write")
    }
}

extension HarnessError {
    /// The error for an asynchronous append's failed submit, wait or completion
    /// (shared by the aio and uring backends).
    init(_ result: cb_result, path: String, submit: String, wait: String, write: String) {
        switch result.step {
        case CB_SUBMIT: self.init("\(submit)(\(path))", errno: result.error)
        case CB_WAIT: self.init("\(wait)(\(path))", errno: result.error)
        case CB_COMPLETION where result.error != 0:
            self.init("\(write)(\(path), \(result.expected))", errno: result.error)
        default:
            self.init("\(write)(\(path), \(result.expected)) wrote \(result.written) bytes")
        }
    }
}
