#if canImport(Glibc)
import Glibc
#endif
import CMMLogShims

/// The one place where MMLog and the `mmlog` tool open, list, rename and remove a log's files
/// (see docs/design.md, "Security"): after systemd's `chase()` and the kernel's
/// `protected_symlinks` / `protected_regular`, which MMLog must not rely on being on.
///
/// A log's files all live in one directory, opened once per operation (the directory path is
/// the caller's choice and trusted; its last component, a name other users may have planted,
/// is not). Every file is reached by name relative to that descriptor, never through a
/// symbolic link (`O_NOFOLLOW`), created with `O_EXCL` when new, and checked on the descriptor
/// (`fstat`), never on the name, before use:
/// - a regular file (a FIFO, socket, device or directory is refused: opened `O_NONBLOCK`, so a
///   FIFO cannot block the open);
/// - one link (a hard link planted to another file would make a writer write there);
/// - in a sticky directory that others can write (`/tmp`, a group's spool), owned by the
///   caller or the directory's owner: a file another user planted there is refused, as the
///   kernel's `protected_regular` refuses it to `O_CREAT`.
/// A directory that others may write and that is not sticky is refused to writers (anyone
/// could replace the log's files there), as logrotate refuses an insecure parent directory.
package final class LogDirectory {
    /// The directory as the caller spelled it ("." for a bare relative name).
    package let path: String
    let fd: Int32
    let ownerUID: uid_t
    /// Sticky and writable by group or others: files must belong to us or the directory's owner.
    let shared: Bool
    /// Writable by others without the sticky bit.
    let insecure: Bool

    /// Opens the directory that holds `filePath`.
    package init(of filePath: String) throws(MMLogError) {
        let directory = Self.split(filePath).directory
        path = directory
        let opened = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard opened >= 0 else {
            throw MMLogError(kind: .system, operation: "open(\(directory), O_DIRECTORY)", errno: mmlog_errno(),
                             detail: "the directory of \(filePath)")
        }
        fd = opened
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0 else {
            let code = mmlog_errno()
            Glibc.close(fd)
            throw MMLogError.system("fstat(\(directory))", code)
        }
        ownerUID = st.st_uid
        let othersWrite = st.st_mode & S_IWOTH != 0, groupWrite = st.st_mode & S_IWGRP != 0
        let sticky = st.st_mode & S_ISVTX != 0
        shared = sticky && (othersWrite || groupWrite)
        insecure = othersWrite && !sticky
    }

    deinit { Glibc.close(fd) }

    /// The last component of `path` (the name in its directory).
    package static func name(of path: String) -> String { split(path).base }

    package static func split(_ path: String) -> (directory: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    /// The path of `name` in `path`'s directory, spelled as `path` spells it (a bare relative
    /// `app.log` gives `app.log.1`, not `./app.log.1`: rotated names must start with `path + "."`).
    package static func sibling(of path: String, named name: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return name }
        return String(path[...slash]) + name
    }

    /// The full path of `name` here, for messages and for callers that keep paths.
    func describe(_ name: String) -> String { path == "." ? name : path == "/" ? "/" + name : path + "/" + name }

    func refusal(_ name: String, _ operation: String, _ why: String) -> MMLogError {
        MMLogError(kind: .unsafeFile, operation: "\(operation)(\(describe(name)))", detail: why)
    }

    /// Throws unless this directory may hold files that a writer trusts.
    func requireSafeForWriting(_ operation: String, _ name: String) throws(MMLogError) {
        if insecure {
            throw refusal(name, operation, "its directory \(path) is writable by every user and not sticky: anyone could replace the log's files there (make it sticky, chmod +t, or not world-writable)")
        }
    }

    /// Opens `name` with `flags` (`O_RDONLY` or `O_RDWR`), creating it with `mode` when `create`
    /// is given and it does not exist (`O_EXCL`: a file that appears meanwhile is opened and
    /// checked like any other). Throws ENOENT (`.system`) when it does not exist and `create`
    /// is nil, and `.unsafeFile` for a file the rules above refuse.
    package func open(_ name: String, _ flags: Int32, create mode: mode_t? = nil, for operation: String) throws(MMLogError) -> Int32 {
        let writing = flags & (O_RDWR | O_WRONLY) != 0
        if writing || mode != nil { try requireSafeForWriting(operation, name) }
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/") else {
            throw refusal(name, operation, "not a file name")
        }
        let base = flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY
        for _ in 0..<100 {
            // A quick look first, so that a device is never opened (an open can have effects).
            var st = Glibc.stat()
            if fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                try check(st, name, operation)
            }
            var created = false
            var opened = Glibc.openat(fd, name, base)
            if opened < 0 && mmlog_errno() == ENOENT, let mode {
                opened = Glibc.openat(fd, name, base | O_CREAT | O_EXCL, mode)
                created = opened >= 0
                if opened < 0 && mmlog_errno() == EEXIST { continue }  // appeared meanwhile: look again
            }
            if opened < 0 {
                let code = mmlog_errno()
                if code == EINTR { continue }
                if code == ELOOP { throw refusal(name, operation, "a symbolic link: MMLog never follows one to its files") }
                throw MMLogError.system("open(\(describe(name)))", code)
            }
            if !created {
                do throws(MMLogError) {
                    try check(try Sys.stat(opened, describe(name)), name, operation)
                } catch {
                    Glibc.close(opened)
                    throw error
                }
            }
            // O_NONBLOCK served only to refuse a FIFO without blocking; a regular file ignores it.
            _ = mmlog_clear_nonblock(opened)
            return opened
        }
        throw MMLogError.system("open(\(describe(name))): the file kept appearing and disappearing", EAGAIN)
    }

    /// Throws unless `st` (of `name` here) is a file MMLog may use.
    package func check(_ st: Glibc.stat, _ name: String, _ operation: String) throws(MMLogError) {
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG else {
            let what: String
            switch type {
            case S_IFLNK: what = "a symbolic link: MMLog never follows one to its files"
            case S_IFDIR: what = "a directory, not a regular file"
            case S_IFIFO: what = "a FIFO, not a regular file"
            case S_IFSOCK: what = "a socket, not a regular file"
            case S_IFCHR, S_IFBLK: what = "a device, not a regular file"
            default: what = "not a regular file"
            }
            throw refusal(name, operation, what)
        }
        if st.st_nlink > 1 {
            throw refusal(name, operation, "it has \(st.st_nlink) hard links: MMLog uses only a file with one name (a link planted to another file would make it write there)")
        }
        if shared && st.st_uid != geteuid() && st.st_uid != ownerUID {
            throw refusal(name, operation, "owned by uid \(st.st_uid), another user, in the shared sticky directory \(path): a file planted there is refused (as the kernel's protected_regular does)")
        }
    }

    /// The identity of the regular file `name` here, or nil when there is none, it is not a
    /// regular file (a symbolic link is not followed) or the rules above refuse it.
    package func identity(of name: String) -> FileIdentity? {
        regularFile(name).map { FileIdentity(device: UInt64($0.st_dev), inode: UInt64($0.st_ino)) }
    }

    /// The status of `name` here when it is a file MMLog may use (see `check`), else nil.
    package func regularFile(_ name: String) -> Glibc.stat? {
        var st = Glibc.stat()
        guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0, (try? check(st, name, "stat")) != nil else { return nil }
        return st
    }

    /// Throws unless `name` here is an existing file MMLog may use: `.notALog` with ENOENT
    /// when there is none, `.unsafeFile` when the rules above refuse it.
    package func requireExisting(_ name: String, for operation: String) throws(MMLogError) {
        var st = Glibc.stat()
        guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw MMLogError(kind: .notALog, operation: "\(operation)(\(describe(name)))", errno: mmlog_errno(), detail: "no such file")
        }
        try check(st, name, operation)
    }

    /// Whether anything (of any type) is at `name`.
    func exists(_ name: String) -> Bool {
        var st = Glibc.stat()
        return fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// Renames `from` to `to`, both here (a symbolic link at `to` is replaced, never followed).
    package func rename(_ from: String, _ to: String) throws(MMLogError) {
        try requireSafeForWriting("rename", from)
        _ = try valueOrErrno("rename(\(describe(from)), \(describe(to)))") { renameat(fd, from, fd, to) }
    }

    /// Removes `name` here (a symbolic link itself, never its target); quiet when it is gone.
    package func remove(_ name: String) {
        guard (try? requireSafeForWriting("unlink", name)) != nil else { return }
        _ = unlinkat(fd, name, 0)
    }

    /// The names in this directory (without "." and "..").
    package func names() -> [String] {
        let copy = dup(fd)
        guard copy >= 0, let dir = fdopendir(copy) else {
            if copy >= 0 { Glibc.close(copy) }
            return []
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
