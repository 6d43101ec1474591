#if canImport(Glibc)
import Glibc
#endif
import ToolSupport

/// The block device under a directory's filesystem, and the bytes the kernel has written to
/// it: a run's "device bytes" are the difference across the run, between a `syncfs` before
/// and one after (both outside the timed window), and its write amplification is device
/// bytes / payload bytes. The counter is the device's, not the run's: anything else writing
/// to the same device in that window (another program, the journal of another filesystem
/// on it) counts too.
///
/// Found through `stat`'s st_dev: /sys/dev/block/MAJOR:MINOR is the device, or the partition,
/// the filesystem sits on, and its `stat` file's seventh field counts sectors written, in
/// 512-byte units whatever the device's sector size. btrfs gives its files an anonymous
/// device number (major 0): then the source of the mount holding the directory, in
/// /proc/self/mountinfo, names the block device (the first one, for a filesystem on several). Filesystems without a block device
/// (tmpfs, overlayfs, NFS) have none, and device bytes are "n/a".
public struct BlockDevice: Sendable, Equatable {
    /// The kernel's name for it (vda, nvme0n1p2, dm-0).
    public var name: String
    /// /sys/dev/block/MAJOR:MINOR/stat.
    public var statPath: String

    public init(name: String, statPath: String) {
        self.name = name
        self.statPath = statPath
    }

    /// The block device holding `directory`'s filesystem, or nil when there is none.
    public static func holding(_ directory: String) -> BlockDevice? {
        guard let (major, minor) = deviceNumbers(of: directory) else { return nil }
        if major != 0 { return numbered(major, minor) }
        guard let source = mountEntry(of: directory)?.source, source.hasPrefix("/dev/"),
              let (sourceMajor, sourceMinor) = deviceNumbers(of: source, special: true), sourceMajor != 0
        else { return nil }
        return numbered(sourceMajor, sourceMinor)
    }

    private static func numbered(_ major: UInt32, _ minor: UInt32) -> BlockDevice? {
        let entry = "/sys/dev/block/\(major):\(minor)"
        let device = BlockDevice(name: deviceName(entry) ?? "\(major):\(minor)", statPath: entry + "/stat")
        return device.bytesWritten() == nil ? nil : device
    }


    /// Bytes written to the device since boot (sectors written x 512), or nil when unreadable.
    public func bytesWritten() -> UInt64? {
        // reads, reads merged, sectors read, ms reading, writes, writes merged, sectors written, ...
        guard let line = readFirstLine(statPath) else { return nil }
        let fields = line.split(separator: " ")
        guard fields.count >= 7, let sectors = UInt64(fields[6]) else { return nil }
        return sectors * 512
    }

    /// DEVNAME from the entry's uevent file.
    private static func deviceName(_ entry: String) -> String? {
        readSmallFile(entry + "/uevent")?.split(separator: "\n")
            .first { $0.hasPrefix("DEVNAME=") }
            .map { String($0.dropFirst("DEVNAME=".count)) }
    }
}
