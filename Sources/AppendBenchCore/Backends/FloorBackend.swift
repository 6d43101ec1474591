#if canImport(Glibc)
import Glibc
#endif
import Atomics
import CBackends

/// The floor MMLog is measured against: one atomic fetch-add on a shared cursor and a copy
/// into a mapping of the whole output, made and prefaulted before the start barrier (so
/// page allocation is in Setup, not in Total Time). Not a log: it must know the total size
/// in advance and cannot grow. Its output is verified like any other. Like MMLog's chunks,
/// the mapping is advised MADV_HUGEPAGE.
final class FloorBackend: AppendBackend {
    static let key = "floor"
    static let category = "floor (prefaulted mmap, not a log)"

    private let path: String
    private let length: Int
    private let data: UnsafeMutableRawPointer
    private let cursorPage: UnsafeMutableRawPointer
    private let cursor: UnsafeAtomic<Int>

    /// The output and the page holding the shared cursor.
    static func outputFiles(for path: String) -> [String] { [path, cursorPath(path)] }

    private static func cursorPath(_ path: String) -> String { path + ".cursor" }

    init(config: BackendConfig) throws {
        path = config.path
        length = config.totalBytes
        guard length > 0 else { throw HarnessError("floor needs the run's total size") }
        // Every worker sizes the same files to the same lengths: idempotent, so no race.
        data = try Self.mapShared(path, length: length, prefault: true)
        cursorPage = try Self.mapShared(Self.cursorPath(path), length: 4096, prefault: false)
        cursor = UnsafeAtomic(at: cursorPage.bindMemory(to: UnsafeAtomic<Int>.Storage.self, capacity: 1))
    }

    @inline(__always)
    func append(_ record: UnsafeRawBufferPointer) throws {
        let offset = cursor.loadThenWrappingIncrement(by: record.count, ordering: .acquiring)
        guard offset + record.count <= length else { throw HarnessError("floor: past the \(length) bytes mapped") }
        (data + offset).copyMemory(from: record.baseAddress!, byteCount: record.count)
    }

    func finish() throws {}

    func sync() throws {
        if msync(data, length, MS_SYNC) != 0 { throw HarnessError.system("msync(\(path), \(length))") }
    }

    func close() throws {
        munmap(data, length)
        munmap(cursorPage, 4096)
    }

    private static func mapShared(_ path: String, length: Int, prefault: Bool) throws -> UnsafeMutableRawPointer {
        let fd = try openFile(path, O_RDWR | O_CREAT)
        defer { Glibc.close(fd) }
        if ftruncate(fd, off_t(length)) != 0 { throw HarnessError.system("ftruncate(\(path), \(length))") }
        guard let map = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw HarnessError.system("mmap(\(path), \(length))")
        }
        // Huge page advice, as MMLog gives its chunks: 2 MiB folios where the filesystem has them.
        if prefault { _ = madvise(map, length, MADV_HUGEPAGE) }
        if prefault && cb_populate_write(map, length) != 0 {
            munmap(map, length)
            throw HarnessError.system("madvise(\(path), MADV_POPULATE_WRITE)")
        }
        return map
    }
}
