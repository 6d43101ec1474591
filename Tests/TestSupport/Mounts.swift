#if canImport(Glibc)
import Glibc
#endif
import CTestSupport

/// Bytes of heap in use now (mallinfo2), for tests that check for leaks.
public func heapInUse() -> Int { Int(test_heap_in_use()) }

/// Root-only fixtures for tests of what disks do: a small tmpfs, an ext4 filesystem on a loop
/// device, a sysctl set for the duration. Each undoes itself in `remove()`/`restore()`, and a
/// test calls those in `defer`, so nothing is left mounted or changed.
public enum Root {
    /// Why root-only tests cannot run here, or nil when they can.
    public static var unavailable: String? {
        getuid() == 0 ? nil : "needs root (mounts, loop devices, sysctls); CI runs the suite as root"
    }
}

/// A tmpfs of `bytes` mounted at a fresh directory.
public struct TemporaryMount {
    public let path: String

    public init(at path: String, bytes: Int) throws {
        mkdir(path, 0o755)
        let result = run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", path])
        guard result.status.succeeded else { throw FixtureError("mount tmpfs at \(path): \(result.stderr)") }
        self.path = path
    }

    public func remove() {
        _ = run("/bin/umount", [path])
        rmdir(path)
    }
}

/// An ext4 filesystem in a file, on a loop device, mounted at a fresh directory.
public struct LoopFilesystem {
    public let image: String
    public let device: String
    public let mountPoint: String

    /// Makes the image (`megabytes`, mkfs.ext4) and mounts it.
    public static func create(image: String, megabytes: Int, mountPoint: String, mkfs: [String] = ["/usr/sbin/mkfs.ext4", "-q", "-F"]) throws -> LoopFilesystem {
        let made = run("/usr/bin/truncate", ["-s", "\(megabytes)M", image])
        guard made.status.succeeded else { throw FixtureError("truncate \(image): \(made.stderr)") }
        let formatted = run(mkfs[0], Array(mkfs.dropFirst()) + [image])
        guard formatted.status.succeeded else { throw FixtureError("\(mkfs.joined(separator: " ")) \(image): \(formatted.stderr)") }
        return try mount(image: image, at: mountPoint)
    }

    /// Attaches an existing image to a new loop device and mounts it.
    public static func mount(image: String, at mountPoint: String) throws -> LoopFilesystem {
        let attached = run("/usr/sbin/losetup", ["-f", "--show", image])
        guard attached.status.succeeded else { throw FixtureError("losetup \(image): \(attached.stderr)") }
        let device = attached.stdout.trimmingCharacters(in: "\n")
        mkdir(mountPoint, 0o755)
        let mounted = run("/bin/mount", [device, mountPoint])
        guard mounted.status.succeeded else {
            _ = run("/usr/sbin/losetup", ["-d", device])
            throw FixtureError("mount \(device) at \(mountPoint): \(mounted.stderr)")
        }
        return LoopFilesystem(image: image, device: device, mountPoint: mountPoint)
    }

    /// Unmounts and detaches (the image file stays).
    public func remove() {
        _ = run("/bin/umount", ["-l", mountPoint])
        _ = run("/usr/sbin/losetup", ["-d", device])
        rmdir(mountPoint)
    }
}

/// A sysctl under /proc/sys set to a value until `restore()`.
public struct Sysctl {
    public let path: String
    public let original: String

    public init(_ name: String, _ value: String) throws {
        path = "/proc/sys/" + name.replacingDots()
        original = readText(path).trimmingCharacters(in: "\n")
        try Sysctl.write(path, value)
    }

    public func restore() {
        try? Sysctl.write(path, original)
    }

    static func write(_ path: String, _ value: String) throws {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { throw FixtureError("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array((value + "\n").utf8)
        guard bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw FixtureError("write \(value) to \(path): \(String(cString: strerror(errno)))")
        }
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let last = s.last, set.contains(last) { s = s.dropLast() }
        while let first = s.first, set.contains(first) { s = s.dropFirst() }
        return String(s)
    }

    func replacingDots() -> String {
        String(map { $0 == "." ? "/" : $0 })
    }
}
