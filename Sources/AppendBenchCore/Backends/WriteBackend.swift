#if canImport(Glibc)
import Glibc
#endif

/// `write()` on an `O_APPEND` descriptor: one system call per record.
final class WriteBackend: AppendBackend {
    static let key = "write"
    static let category = "O_APPEND with write()"

    private let fd: Int32
    private let path: String

    init(config: BackendConfig) throws {
        path = config.path
        fd = try openForAppend(path)
    }

    func append(_ record: UnsafeRawBufferPointer) throws {
        let n = retryingInterrupts { write(fd, record.baseAddress, record.count) }
        if n < 0 { throw BackendError.system("write(\(path), \(record.count))") }
        // A short append would leave a torn record that another writer lands after: an error.
        if n != record.count { throw BackendError("write(\(path), \(record.count)) wrote \(n) bytes") }
    }

    func finish() throws {}

    func sync() throws { try syncData(fd, path) }

    func close() throws {
        try closeChecked(fd, path)
    }
}
