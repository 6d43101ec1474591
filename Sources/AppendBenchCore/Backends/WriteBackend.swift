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
        try appendOnce(fd, record, path)  // a short append is an error, never completed
    }

    func finish() throws {}

    func sync() throws { try syncData(fd, path) }

    func close() throws {
        try closeChecked(fd, path)
    }
}
