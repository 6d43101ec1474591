#if canImport(Glibc)
import Glibc
#endif

/// A stdio stream in append mode: `fwrite` per record, `fflush` every `batch` records.
///
/// The stream buffer is at least a whole batch and is empty after each flush, so a batch
/// always fits and no record is split between two write(2)s. stdio drops whatever a
/// failed write did not take, so an interrupted flush cannot be retried: any failure is final.
final class FwriteBackend: AppendBackend {
    static let key = "fwrite"
    static let category = "FILE streams (fwrite)"

    private let stream: UnsafeMutablePointer<FILE>
    private let path: String
    private let batch: Int
    private let buffer: UnsafeMutablePointer<CChar>
    private var pending = 0
    private var isOpen = true

    init(config: BackendConfig) throws {
        path = config.path
        batch = max(config.batch, 1)
        // fdopen of our own descriptor keeps O_CLOEXEC and the flags every backend opens with.
        let fd = try openForAppend(path)
        guard let stream = fdopen(fd, "a") else {
            let error = HarnessError.system("fdopen(\(path))")
            _ = Glibc.close(fd)
            throw error
        }
        // At least BUFSIZ, stdio's default: glibc writes through buffers under 128 bytes.
        let size = max(config.recordSize * batch, Int(BUFSIZ))
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        if setvbuf(stream, buffer, _IOFBF, size) != 0 {
            fclose(stream)
            buffer.deallocate()
            throw HarnessError("setvbuf(\(path), \(size))")
        }
        self.stream = stream
        self.buffer = buffer
    }

    deinit {
        if isOpen {
            fclose(stream)
            buffer.deallocate()
        }
    }

    func append(_ record: UnsafeRawBufferPointer) throws {
        // A record that does not fit is written directly, so fwrite can fail too.
        if fwrite(record.baseAddress, 1, record.count, stream) != record.count {
            throw HarnessError.system("fwrite(\(path), \(record.count))")
        }
        pending += 1
        if pending == batch { try flush() }
    }

    private func flush() throws {
        pending = 0
        if fflush(stream) != 0 { throw HarnessError.system("fflush(\(path))") }
    }

    func finish() throws { try flush() }

    func sync() throws {
        try finish()
        try syncData(fileno(stream), path)
    }

    func close() throws {
        guard isOpen else { return }
        isOpen = false
        let closed = fclose(stream) == 0  // flushes anything left, then closes the descriptor
        let error = closed ? nil : HarnessError.system("fclose(\(path))")
        buffer.deallocate()
        if let error { throw error }
    }
}
