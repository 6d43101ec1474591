import MMLog

/// `MMLog.append`: one atomic fetch-add and a copy into a shared mapping.
final class MMLogBackend: AppendBackend {
    static let key = "mmlog"
    static let category = "mmlog"

    private let log: MMLog

    /// The data file and MMLog's metadata beside it.
    static func outputFiles(for path: String) -> [String] { MMLog.files(ofLog: path) }

    init(config: BackendConfig) throws {
        log = try MMLog(path: config.path, options: config.mmlog)
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

// MARK: MMLog's options in the report

extension MMLogBackend {
    /// MMLog's columns in the CSV and the JSON (the invocation's): the one place that names
    /// them. `chunk_size`, the first, stands after `depth`, where it always has; the others
    /// follow `fsync_every`. A new knob is one more pair at the end.
    static func reportColumns(_ options: MMLog.Options) -> [(column: String, value: FieldValue)] {
        [("chunk_size", .integer(options.chunkSize)),
         ("max_chunks", .integer(options.maxChunks)),
         ("prefault", .text(options.prefault.rawValue)),
         ("huge_pages", .flag(options.hugePages)),
         ("prefetch", .flag(options.prefetch)),
         ("adaptive_pages", .flag(options.adaptivePages))]
    }

    /// The note under the table when MMLog's pages were handled other than by default, in the
    /// flags that did it (`MMLogFlags`); nil at the defaults.
    static func reportNote(_ options: MMLog.Options) -> String? {
        let defaults = MMLog.Options()
        func flag(_ name: String, _ value: Bool, _ byDefault: Bool) -> String {
            value == byDefault ? "" : value ? " --\(name)" : " --no-\(name)"
        }
        let changed = flag("huge-pages", options.hugePages, defaults.hugePages) + flag("prefetch", options.prefetch, defaults.prefetch)
            + flag("adaptive-pages", options.adaptivePages, defaults.adaptivePages)
        guard options.prefault != defaults.prefault || !changed.isEmpty else { return nil }
        return "MMLog ran with --prefault \(options.prefault.rawValue)\(changed)."
    }
}
