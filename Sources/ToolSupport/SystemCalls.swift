#if canImport(Glibc)
import Glibc
#endif

// ToolSupport: what the package's executables and the harness share, kept out of MMLog.
// This file: retrying an interrupted call, and writing to the standard streams without stdio.
// Time.swift: clocks, sleeping, timestamps. Machine.swift: the facts a result is filed with.
// Numbers.swift: fixed decimals. Threads.swift: a thread per job.

/// Calls `body` again while it fails with EINTR: the one place the harness and the tools
/// retry an interrupted system call. Returns the last result (negative, with errno set, on
/// failure).
@inlinable @inline(__always)
public func retryingInterrupts(_ body: () -> Int) -> Int {
    while true {
        let result = body()
        if result >= 0 || errno != EINTR { return result }
    }
}

// MARK: Standard output and error

/// Writes all of `text` to `fd` with write(2): no stdio buffer, so nothing is held back from
/// a reader (a test reading our output as we run) or written twice after a fork. Returns
/// false when a write fails (a closed pipe). The corresponding C function is `write`.
@discardableResult
public func writeUnbuffered(_ text: String, to fd: Int32) -> Bool {
    var text = text
    return text.withUTF8 { bytes in
        var done = 0
        while done < bytes.count {
            let n = retryingInterrupts { write(fd, bytes.baseAddress! + done, bytes.count - done) }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

/// Writes `text` to stderr as it is. Best effort.
public func writeStandardError(_ text: String) {
    writeUnbuffered(text, to: 2)
}

/// Writes `line` and a newline to stdout, unbuffered. Best effort.
public func printOut(_ line: String) {
    writeUnbuffered(line + "\n", to: 1)
}

/// Writes `line` and a newline to stderr, unbuffered. Best effort.
public func printError(_ line: String) {
    writeUnbuffered(line + "\n", to: 2)
}

public var standardErrorIsTerminal: Bool { isatty(2) == 1 }

/// Says `message` on stderr as `<program>: <message>` and exits with `status`: for a tool's
/// failures at run time (bad arguments are ArgumentParser's, exit 64).
public func die(_ message: String, status: Int32 = 1) -> Never {
    let program = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? "?"
    printError("\(program): \(message)")
    exit(status)
}
