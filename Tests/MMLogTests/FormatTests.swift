#if canImport(Glibc)
import Glibc
#endif
import MMLog
import TestSupport
import XCTest

/// On-disk format upgrades (see CHANGELOG.md): a version 2 log, whose locks were bytes of its
/// metadata file, becomes version 3 (locks in `<path>.mmlog-lock`) at its next open alone.
final class FormatTests: XCTestCase {
    var scratch: ScratchDirectory!

    override func setUp() { scratch = ScratchDirectory("mmlog-format") }
    override func tearDown() { scratch.remove() }

    /// Turns a version 3 header back into the version 2 it extends (the lock fields were
    /// reserved zeros there) and removes the lock file.
    func downgradeToVersion2(_ path: String) {
        var header = readBytes(path + ".mmlog")
        header.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: MetadataLayout.version2, toByteOffset: MetadataLayout.versionOffset, as: UInt32.self)
            raw.storeBytes(of: UInt64(0), toByteOffset: MetadataLayout.lockRegionOffset, as: UInt64.self)
            for i in 0..<(4 + MetadataLayout.lockNameCapacity) { raw[MetadataLayout.lockNameOffset + i] = 0 }
        }
        writeBytes(path + ".mmlog", header)
        unlink(MMLog.files(ofLog: path)[2])
    }

    func testAVersion2LogIsUpgradedAtItsNextOpenAndKeepsItsRecords() throws {
        let path = scratch.file("old.log")
        var log = try MMLog(path: path)
        for i in 0..<1000 { try log.append("record \(i)\n") }
        try log.close()
        let before = readText(path)
        downgradeToVersion2(path)
        XCTAssertEqual(try MMLogReader(path: path).status().formatVersion, 2, "a reader reads a version 2 log")

        log = try MMLog(path: path)
        XCTAssertTrue(log.recovery?.description.contains("from format version 2 to \(MetadataLayout.version)") ?? false,
                      "\(String(describing: log.recovery))")
        try log.append("after the upgrade\n")
        try log.close()
        XCTAssertEqual(readText(path), before + "after the upgrade\n")
        XCTAssertEqual(try MMLogReader(path: path).status().formatVersion, Int(MetadataLayout.version))
        XCTAssertNotNil(fileSize(MMLog.files(ofLog: path)[2]), "the upgrade made the lock file")
    }

    func testAVersion2LogInUseByAnOlderMMLogIsNotUpgradedUnderIt() throws {
        let path = scratch.file("busy.log")
        let log = try MMLog(path: path)
        try log.append("one\n")
        try log.close()
        downgradeToVersion2(path)
        // An older MMLog attached: its shared lock on byte 1 of the metadata file.
        let fd = open(path + ".mmlog", O_RDWR)
        defer { close(fd) }
        let F_OFD_SETLK: Int32 = 37  // <fcntl.h>, not exported by Glibc's module
        var lock = flock(l_type: Int16(F_RDLCK), l_whence: Int16(SEEK_SET), l_start: off_t(MetadataLayout.attachLockByte), l_len: 1, l_pid: 0)
        XCTAssertEqual(fcntl(fd, F_OFD_SETLK, &lock), 0)
        XCTAssertThrowsError(try MMLog(path: path)) { error in
            XCTAssertEqual((error as? MMLogError)?.kind, .incompatibleMetadata, "\(error)")
        }
        XCTAssertEqual(try MMLogReader(path: path).status().formatVersion, 2, "left as it was")
        lock.l_type = Int16(F_UNLCK)
        XCTAssertEqual(fcntl(fd, F_OFD_SETLK, &lock), 0)
        let upgraded = try MMLog(path: path)
        try upgraded.close()
        XCTAssertEqual(readText(path), "one\n")
    }
}
