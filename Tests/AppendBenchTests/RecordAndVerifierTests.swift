import BenchRecords
import XCTest

final class RecordFormatTests: XCTestCase {
    func testSplitmixIsTheStandardFinaliser() {
        // First outputs of the reference splitmix64 generator seeded with 0 are the finaliser
        // applied to 0, 1 and 2 times the golden gamma.
        XCTAssertEqual(RecordFormat.splitmix64(0), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(RecordFormat.splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4)
        XCTAssertEqual(RecordFormat.splitmix64(0x3C6E_F372_FE94_F82A), 0x06C4_5D18_8009_454F)
        var generator = SplitMix64(seed: 0)
        XCTAssertEqual([generator.next(), generator.next(), generator.next()],
                       [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
    }

    func testHeaderedRecordLayout() {
        let bytes = RecordFormat.record(worker: 3, index: 0x0102_0304_0506, size: 29)
        XCTAssertEqual(Array(bytes[0..<4]), [3, 0, 0, 0], "worker, little-endian")
        XCTAssertEqual(Array(bytes[4..<8]), [29, 0, 0, 0], "size")
        XCTAssertEqual(Array(bytes[8..<16]), [6, 5, 4, 3, 2, 1, 0, 0], "index")
        let word = RecordFormat.splitmix64((3 << 32) | 0x0102_0304_0506)
        for k in 16..<29 {
            XCTAssertEqual(bytes[k], UInt8(truncatingIfNeeded: word >> (8 * UInt64(k % 8))), "byte \(k)")
        }
    }

    func testShortRecordsAreTheWorkersLetter() {
        XCTAssertEqual(RecordFormat.record(worker: 0, index: 9, size: 1), [0x41])
        XCTAssertEqual(RecordFormat.record(worker: 27, index: 0, size: 15), Array(repeating: 0x42, count: 15))
    }
}

final class VerifierTests: XCTestCase {
    /// Records of `workers` x `ops`, interleaved round-robin, each padded to `stride`.
    func file(workers: Int, ops: Int, size: Int, stride: Int? = nil) -> [UInt8] {
        var bytes: [UInt8] = []
        for i in 0..<ops {
            for w in 0..<workers {
                bytes += RecordFormat.record(worker: w, index: i, size: size)
                bytes += Array(repeating: 0, count: (stride ?? size) - size)
            }
        }
        return bytes
    }

    func verify(_ bytes: [UInt8], _ expectation: Expectation) -> VerificationReport {
        bytes.withUnsafeBytes { Verifier.verify($0, expectation) }
    }

    func testAWholeFileVerifies() {
        for size in [1, 15, 16, 17, 128, 4095] {
            let report = verify(file(workers: 3, ops: 20, size: size), Expectation(workers: 3, ops: 20, size: size))
            XCTAssertTrue(report.ok, "size \(size): \(report)")
            XCTAssertEqual(report.wholeRecords, 60)
        }
    }

    func testATornRecordIsFound() {
        var bytes = file(workers: 2, ops: 10, size: 64)
        bytes[5 * 64 + 40] ^= 1
        let report = verify(bytes, Expectation(workers: 2, ops: 10, size: 64))
        XCTAssertFalse(report.ok)
        XCTAssertEqual(report.torn, 1)
        XCTAssertEqual(report.missing, 1)
        XCTAssertTrue(report.description.contains("offset 320"), report.description)
    }

    func testAMissingRecordIsFound() {
        var bytes = file(workers: 2, ops: 10, size: 64)
        bytes.removeSubrange(7 * 64..<8 * 64)
        let report = verify(bytes, Expectation(workers: 2, ops: 10, size: 64))
        XCTAssertFalse(report.ok)
        XCTAssertEqual(report.missing, 1)
        XCTAssertTrue(report.description.contains("worker 1: 1 records missing, first index 3"), report.description)
    }

    func testADuplicateAndAnExtraSlotAreFound() {
        var bytes = file(workers: 2, ops: 10, size: 64)
        bytes += RecordFormat.record(worker: 0, index: 9, size: 64)
        let report = verify(bytes, Expectation(workers: 2, ops: 10, size: 64))
        XCTAssertEqual(report.duplicates, 1)
        XCTAssertFalse(report.ok)
    }

    func testRecordsOutOfOrderAreFoundOnlyWhenOrderIsChecked() {
        var bytes = file(workers: 1, ops: 10, size: 32)
        let third = Array(bytes[64..<96])
        bytes.replaceSubrange(64..<96, with: bytes[96..<128])
        bytes.replaceSubrange(96..<128, with: third)
        XCTAssertEqual(verify(bytes, Expectation(workers: 1, ops: 10, size: 32)).outOfOrder, 1)
        XCTAssertTrue(verify(bytes, Expectation(workers: 1, ops: 10, size: 32, checkOrder: false)).ok)
    }

    func testTrailingBytesAndPaddingAreChecked() {
        let padded = file(workers: 2, ops: 5, size: 100, stride: 512)
        XCTAssertTrue(verify(padded, Expectation(workers: 2, ops: 5, size: 100, stride: 512)).ok)
        var dirtyPadding = padded
        dirtyPadding[200] = 1
        XCTAssertEqual(verify(dirtyPadding, Expectation(workers: 2, ops: 5, size: 100, stride: 512)).torn, 1)
        let report = verify(padded + [0, 0, 0], Expectation(workers: 2, ops: 5, size: 100, stride: 512))
        XCTAssertEqual(report.trailingBytes, 3)
        XCTAssertFalse(report.ok)
    }

    func testShortRecordsCountLetters() {
        var bytes = file(workers: 3, ops: 10, size: 4)
        XCTAssertTrue(verify(bytes, Expectation(workers: 3, ops: 10, size: 4)).ok)
        bytes[4 * 4 + 2] = 0x43  // one byte of a 'B' record becomes 'C': torn
        let torn = verify(bytes, Expectation(workers: 3, ops: 10, size: 4))
        XCTAssertEqual(torn.torn, 1)
        XCTAssertFalse(torn.ok)
        let missing = verify(Array(bytes.dropLast(4)), Expectation(workers: 3, ops: 10, size: 4))
        XCTAssertFalse(missing.ok)
    }

    func testAKilledWorkerMayLeaveAPrefixAndOneHole() {
        // Worker 1 died while writing its record 6: records 0..<6, then a zero slot.
        var bytes: [UInt8] = []
        for i in 0..<10 {
            bytes += RecordFormat.record(worker: 0, index: i, size: 64)
            if i < 6 { bytes += RecordFormat.record(worker: 1, index: i, size: 64) }
            if i == 6 { bytes += Array(repeating: 0, count: 64) }
        }
        let expectation = Expectation(planned: [10, 10], killed: [1], size: 64)
        let report = verify(bytes, expectation)
        XCTAssertTrue(report.ok, report.description)
        XCTAssertEqual(report.holes, 1)
        XCTAssertEqual(report.perWorker, [10, 6])

        // A gap in the killed worker's prefix is a lost record, not a crash.
        var gap = bytes
        let second = 3 * 64  // worker 1, record 1
        gap.replaceSubrange(second..<second + 64, with: Array(repeating: 0, count: 64))
        let lost = verify(gap, expectation)
        XCTAssertFalse(lost.ok, lost.description)
    }
}
