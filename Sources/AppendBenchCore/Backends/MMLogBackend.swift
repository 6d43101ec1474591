import MMLog

/// `MMLog.append`: one atomic fetch-add and a copy into a shared mapping.
final class MMLogBackend: AppendBackend {
    static let key = "mmlog"
    static let category = "mmlog"

    private let log: MMLog

    init(config: BackendConfig) throws {
        log = try MMLog(path: config.path, options: .init(chunkSize: config.chunkSize, maxChunks: config.maxChunks,
                                                         prefault: config.prefault, hugePages: config.hugePages,
                                                         prefetch: config.prefetch))
    }

    @inline(__always)
    func append(_ record: UnsafeRawBufferPointer) throws {
        try log.append(record)
    }

    func finish() throws {}

    func sync() throws { try log.sync() }

    func close() throws {
        try log.close()
    }
}
