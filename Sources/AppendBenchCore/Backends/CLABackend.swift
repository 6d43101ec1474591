/// The article's central log service as it began: send the record to the collector process
/// and wait for its answer, which comes once the record is appended (with `--fsync-every N`,
/// after the collector's `fdatasync` every N records; N = 1 is the original service:
/// append, fsync, answer). One round trip and two context switches per record.
final class CLABackend: CentralLogServiceBackend {
    static let key = "cla"
    static let category = "central log service (acknowledged)"
    static let acknowledged = true

    let client: CentralLogClient
    init(client: CentralLogClient) { self.client = client }
}

/// What `cla` and `cla-async` share: the collector (the run service) and a client that sends
/// each record as one message. Nothing of the worker's own to flush or sync: durability is the
/// collector's (`--fsync-every` counts the records it appends); an acknowledged worker's answer
/// says its record is appended, a fire-and-forget worker does not wait for it.
protocol CentralLogServiceBackend: AppendBackend {
    static var acknowledged: Bool { get }
    var client: CentralLogClient { get }
    init(client: CentralLogClient)
}

extension CentralLogServiceBackend {
    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        CentralLogClient.unsupportedReason(config: config)
    }

    static func prepareRun(config: inout BackendConfig, workers: Int) throws -> (any RunService)? {
        try CentralLogCollector(key: key, acknowledged: acknowledged, config: &config, workers: workers)
    }

    init(config: BackendConfig) throws {
        self.init(client: try CentralLogClient(key: Self.key, config: config, acknowledged: Self.acknowledged))
    }

    @inline(__always)
    func append(_ record: UnsafeRawBufferPointer) throws {
        try client.send(record)
    }

    func finish() throws {}
    func sync() throws {}

    func close() throws {
        try client.close()
    }
}
