/// The article's central log service as it began: send the record to the collector process
/// and wait for its answer, which comes once the record is appended (with `--fsync-every N`,
/// after the collector's `fdatasync` every N records; N = 1 is the original service:
/// append, fsync, answer). One round trip and two context switches per record.
final class CLABackend: AppendBackend {
    static let key = "cla"
    static let category = "central log service (acknowledged)"

    private let client: CentralLogClient

    static func unsupportedReason(directory: String, config: BackendConfig) -> String? {
        CentralLogClient.unsupportedReason(config: config)
    }

    static func prepareRun(config: inout BackendConfig, workers: Int) throws -> (any RunService)? {
        try CentralLogCollector(key: key, acknowledged: true, config: &config, workers: workers)
    }

    init(config: BackendConfig) throws {
        client = try CentralLogClient(key: Self.key, config: config, acknowledged: true)
    }

    @inline(__always)
    func append(_ record: UnsafeRawBufferPointer) throws {
        try client.send(record)
    }

    func finish() throws {}

    /// Nothing of the worker's own: durability is the collector's (`--fsync-every` counts the
    /// records it appends), and its answer says the record is appended.
    func sync() throws {}

    func close() throws {
        try client.close()
    }
}
