#if canImport(Glibc)
import Glibc
#endif
import CBackends
import ToolSupport

/// `O_DIRECT|O_APPEND`: each record copied into an aligned block, zero-padded to the
/// filesystem's direct-I/O alignment, and written with one `write`. The padding is part of
/// the file (the verifier checks it is zero); throughput counts payload bytes only.
final class DirectBackend: AppendBackend {
    static let key = "direct"
    static let category = "Direct I/O (O_DIRECT)"

    private let fd: Int32
    private let path: String
    private let stride: Int
    /// One record's slot: payload in front, zeros behind it that no append overwrites.
    private let block: UnsafeMutableRawPointer
    private var isOpen = true

    init(config: BackendConfig) throws {
        path = config.path
        fd = try openForAppend(path, extraFlags: cb_o_direct())
        var memory: UnsafeMutableRawPointer?
        do {
            let alignment = try Self.alignment(of: fd, path: path)
            stride = Self.roundUp(config.recordSize, to: alignment.offset)
            let rc = posix_memalign(&memory, max(alignment.memory, alignment.offset), stride)
            if rc != 0 { throw HarnessError("posix_memalign(\(alignment.memory), \(stride))", errno: rc) }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        block = memory!
        block.initializeMemory(as: UInt8.self, repeating: 0, count: stride)
    }

    deinit {
        if isOpen {
            free(block)
            _ = Glibc.close(fd)
        }
    }

    func append(_ record: UnsafeRawBufferPointer) throws {
        block.copyMemory(from: record.baseAddress!, byteCount: record.count)
        let n = retryingInterrupts { write(fd, block, stride) }
        if n < 0 { throw HarnessError.system("write(\(path), \(stride), O_DIRECT)") }
        if n != stride { throw HarnessError("write(\(path), \(stride), O_DIRECT) wrote \(n) bytes") }
    }

    func finish() throws {}

    func sync() throws { try syncData(fd, path) }  // O_DIRECT skips the page cache, not the device cache

    func close() throws {
        guard isOpen else { return }
        isOpen = false
        free(block)
        try closeChecked(fd, path)
    }

    static func stride(directory: String, config: BackendConfig) throws -> Int {
        // statx reports the alignment for regular files only, not for their directory.
        let offset = try withProbeFile(in: directory) { probe, fd in try alignment(of: fd, path: probe).offset }
        return roundUp(config.recordSize, to: offset)
    }

    /// Opens a probe file with O_DIRECT and writes one aligned block: filesystems without
    /// direct I/O refuse with EINVAL at the open (tmpfs before Linux 6.6) or at the write.
    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        func reason(_ error: HarnessError) -> String {
            let step = error.operation.hasPrefix("open") ? "open" : "write"
            let cause = String(cString: strerror(error.errno ?? 0))
            return error.errno == EINVAL
                ? "O_DIRECT not supported by this filesystem (\(step): \(cause))"
                : "O_DIRECT probe in \(directory) failed (\(error))"
        }
        do {
            try withProbeFile(in: directory) { probe, _ in
                let fd = try openFile(probe, O_WRONLY | cb_o_direct())
                defer { _ = Glibc.close(fd) }
                let alignment = try alignment(of: fd, path: probe)
                var block: UnsafeMutableRawPointer?
                let rc = posix_memalign(&block, max(alignment.memory, alignment.offset), alignment.offset)
                if rc != 0 { throw HarnessError("posix_memalign", errno: rc) }
                defer { free(block) }
                block!.initializeMemory(as: UInt8.self, repeating: 0, count: alignment.offset)
                if retryingInterrupts({ write(fd, block, alignment.offset) }) < 0 {
                    throw HarnessError.system("write(\(probe), O_DIRECT)")
                }
            }
            return nil
        } catch let error as HarnessError {
            return reason(error)
        } catch {
            return "O_DIRECT probe in \(directory) failed (\(error))"
        }
    }

    private static func roundUp(_ size: Int, to alignment: Int) -> Int {
        (size + alignment - 1) / alignment * alignment
    }

    /// Runs `body` on a new, uniquely named file in `directory`, then removes the file.
    private static func withProbeFile<T>(in directory: String, _ body: (String, Int32) throws -> T) throws -> T {
        var template = Array("\(directory)/.appendbench-direct-probe-XXXXXX".utf8CString)
        let (fd, probe) = template.withUnsafeMutableBufferPointer { name in
            (mkstemp(name.baseAddress!), String(cString: name.baseAddress!))
        }
        if fd < 0 { throw HarnessError.system("open(\(probe))") }
        defer {
            _ = Glibc.close(fd)
            unlink(probe)
        }
        return try body(probe, fd)
    }

    /// (buffer address, file offset and length) alignment for direct I/O on `fd`.
    ///
    /// statx STATX_DIOALIGN (Linux 6.1+). Where the kernel or filesystem does not report it,
    /// the fallback is st_blksize rather than 512: BLKSSZGET needs the block device, and
    /// st_blksize (the filesystem block, 4096 on ext4 and tmpfs) is a multiple of the
    /// logical sector size, so it is always accepted, at the cost of more padding.
    private static func alignment(of fd: Int32, path: String) throws -> (memory: Int, offset: Int) {
        var memory: UInt32 = 0, offset: UInt32 = 0
        let rc = cb_dio_alignment(fd, &memory, &offset)
        if rc < 0 && rc != -ENOSYS { throw HarnessError("statx(\(path), STATX_DIOALIGN)", errno: -rc) }
        if memory > 0 && offset > 0 { return (Int(memory), Int(offset)) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw HarnessError.system("fstat(\(path))") }
        let block = max(Int(st.st_blksize), 512)
        return (block, block)
    }
}
