#if canImport(Glibc)
import Glibc
#endif

/// An error from MMLog: which operation failed and why.
///
/// The description names the operation and, for system calls, the errno:
/// `fallocate(/var/log/app.log, 0, 16777216): No space left on device (errno 28)`.
public struct MMLogError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// A system call failed; `errno` says why.
        case system
        /// The options passed to `MMLog.init` are out of range.
        case invalidOptions
        /// The metadata file is not a valid MMLog header (wrong magic, truncated, out-of-range fields).
        case corruptMetadata
        /// The metadata file was written by an incompatible MMLog (other version or page size).
        case incompatibleMetadata
        /// The metadata exists but the data file beside it does not, while others are attached.
        case dataFileMissing
        /// The data file is driven through another metadata file, or the metadata describes
        /// another data file that processes still append to (files renamed under writers).
        case dataFileInUse
        /// The handle was closed.
        case closed
        /// The handle was inherited across fork(): the child must open the log itself.
        case forked
        /// A record larger than the largest one append takes (4 GiB - 1 bytes).
        case recordTooLarge
        /// The path is not an MMLog log, or no log at all (readers and the `mmlog` tool).
        case notALog
        /// A file MMLog will not use: a symbolic link, not a regular file (a FIFO, socket,
        /// device or directory), a file with more than one hard link, a file another user
        /// planted in a shared sticky directory, or a directory anyone may write to (see the
        /// "Security" section of docs/design.md). The detail says which.
        case unsafeFile
    }

    public let kind: Kind
    /// The failing operation, with its arguments, e.g. `fallocate(/tmp/x.log, 0, 8388608)`.
    public let operation: String
    /// The C errno for `.system` errors.
    public let errno: Int32?
    /// More detail for non-system errors.
    public let detail: String?

    public init(kind: Kind, operation: String, errno: Int32? = nil, detail: String? = nil) {
        self.kind = kind
        self.operation = operation
        self.errno = errno
        self.detail = detail
    }

    static func system(_ operation: String, _ code: Int32) -> MMLogError {
        MMLogError(kind: .system, operation: operation, errno: code)
    }

    /// True when the filesystem is full (ENOSPC) or the quota is exhausted (EDQUOT).
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    public var description: String {
        var text = operation
        if let errno {
            text += ": \(String(cString: strerror(errno))) (errno \(errno))"
        }
        if let detail { text += ": \(detail)" }
        return text
    }
}
