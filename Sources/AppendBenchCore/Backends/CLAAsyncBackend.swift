/// The article's first fix to its central log service: fire and forget. Send the record to
/// the collector and go on; the collector appends it when it gets to it. The socket's buffer
/// is the queue: a worker blocks only when it is full. The run is not done until the
/// collector has appended the last record and closed the file.
final class CLAAsyncBackend: AppendBackend {
    static let key = "cla-async"
    static let category = "central log service (fire and forget)"

    private let client: CentralLogClient

    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        CentralLogClient.unsupportedReason(config: config)
    }

    static func prepareRun(config: inout BackendConfig, workers: Int) throws -> (any RunService)? {
        try CentralLogCollector(key: key, acknowledged: false, config: &config, workers: workers)
    }

    init(config: BackendConfig) throws {
        client = try CentralLogClient(key: Self.key, config: config, acknowledged: false)
    }

    @inline(__always)
    func append(_ record: UnsafeRawBufferPointer) throws {
        try client.send(record)
    }

    func finish() throws {}

    /// Nothing of the worker's own: the collector makes records durable (`--fsync-every`
    /// counts the records it appends), and a fire-and-forget worker does not wait for it.
    func sync() throws {}

    func close() throws {
        try client.close()
    }
}
