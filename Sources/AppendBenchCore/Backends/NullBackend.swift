/// Does nothing: its row measures the harness loop itself (record encoding, timing).
final class NullBackend: AppendBackend {
    static let key = "null"
    static let category = "null (harness overhead)"
    static let writesRecords = false

    init(config: BackendConfig) throws {}

    @inline(never)
    func append(_ record: UnsafeRawBufferPointer) throws {}

    func finish() throws {}

    func sync() throws {}

    func close() throws {}
}
