/// The article's first fix to its central log service: fire and forget. Send the record to
/// the collector and go on; the collector appends it when it gets to it. The socket's buffer
/// is the queue: a worker blocks only when it is full. The run is not done until the
/// collector has appended the last record and closed the file.
final class CLAAsyncBackend: CentralLogServiceBackend {
    static let key = "cla-async"
    static let category = "central log service (fire and forget)"
    static let acknowledged = false

    let client: CentralLogClient
    init(client: CentralLogClient) { self.client = client }
}
