import ArgumentParser
import MMLog

/// MMLog's options as command-line flags: the one declaration of their names, help and
/// defaults, for every command that opens a log (`@OptionGroup var mmlog: MMLogFlags`).
/// A new knob of `MMLog.Options` is one more property here and one more argument in `options`.
public struct MMLogFlags: ParsableArguments {
    @Option(name: .customLong("chunk-size"),
            help: ArgumentHelp("MMLog chunk size in bytes (a power of two, a multiple of the page size).", valueName: "bytes"))
    public var chunkSize = MMLog.Options.defaultChunkSize

    @Option(name: .customLong("max-chunks"), help: "MMLog chunks each process keeps mapped.")
    public var maxChunks = MMLog.Options.defaultMaxChunks

    @Option(name: .long, help: ArgumentHelp("How MMLog prefaults a chunk it maps: write (MADV_POPULATE_WRITE), read (MADV_POPULATE_READ: pages are dirtied only when written) or none.", valueName: "write|read|none"))
    public var prefault = MMLog.Options().prefault

    @Flag(name: .customLong("huge-pages"), inversion: .prefixedNo, help: "MMLog maps chunks 2 MiB-aligned with MADV_HUGEPAGE.")
    public var hugePages = MMLog.Options().hugePages

    @Flag(name: .long, inversion: .prefixedNo, help: "MMLog prefaults the next chunk on a helper thread per process.")
    public var prefetch = MMLog.Options().prefetch

    @Flag(name: .customLong("adaptive-pages"), inversion: .prefixedNo,
          help: "MMLog uses --huge-pages and --prefault only while the log fills fast and is not synced, 4 KiB pages dirtied one at a time otherwise (see the README's knobs).")
    public var adaptivePages = MMLog.Options().adaptivePages

    public init() {}

    /// The options the flags say; everything they do not name is MMLog's default.
    public var options: MMLog.Options {
        MMLog.Options(chunkSize: chunkSize, maxChunks: maxChunks, prefault: prefault, hugePages: hugePages, prefetch: prefetch,
                      adaptivePages: adaptivePages)
    }

    /// MMLog's own check of its options (`MMLog.Options.problem`), made once, before anything
    /// runs: a bad value is a usage error (exit 64) naming the flag, not a failed run.
    public func validate() throws {
        guard let problem = options.problem() else { return }
        throw ValidationError(namingTheFlag(problem) + ".")
    }

    /// MMLog names the field at fault as `MMLog.Options` calls it ("chunk size 5000 must be
    /// ..."); the person reading the message typed a flag.
    func namingTheFlag(_ problem: String) -> String {
        let flags = [("chunk size ", "--chunk-size "), ("maxChunks ", "--max-chunks ")]
        for (field, flag) in flags where problem.hasPrefix(field) {
            return flag + problem.dropFirst(field.count)
        }
        return "--chunk-size \(chunkSize) --max-chunks \(maxChunks): " + problem
    }
}

extension MMLog.Prefault: ExpressibleByArgument {}
