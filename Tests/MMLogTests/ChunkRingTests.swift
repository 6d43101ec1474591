#if canImport(Glibc)
import Glibc
#endif
import Atomics
import Dispatch
import Foundation
import MMLog
import Synchronization
import TestSupport
import XCTest

/// The chunk ring under remapping: threads copy into chunks while others evict them.
final class ChunkRingTests: XCTestCase {
    var scratch: ScratchDirectory!
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))

    override func setUp() { scratch = ScratchDirectory("mmlog-ring-test") }
    override func tearDown() { scratch.remove() }

    struct Placed: Sendable { var offset: Int; var n: Int; var size: Int }

    /// Record `n` of thread `t`: every byte depends on (t, n, position), so a byte copied
    /// into the wrong mapping, or lost with one unmapped under its copy, shows.
    static func record(thread t: Int, n: Int, size: Int) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ n &* 17 &+ t &* 101 &+ 3) }
    }

    /// Many threads, a ring of two small chunks: nearly every append lands in a chunk that
    /// another thread is about to evict (or has just evicted, so the writer falls back to
    /// pwrite), and records straddle chunks. Every record must be in the file, whole, at the
    /// offset its append returned, and nothing else. An unmap under a copy would crash
    /// (SIGSEGV) or misplace bytes.
    func testThreadsCopyWhileOthersRemapTheRing() throws {
        for (chunk, maxSize) in [(page, 3000), (4 * page, 20000)] {
            let path = scratch.file("ring-\(chunk).log")
            let log = try MMLog(path: path, options: .init(chunkSize: chunk, maxChunks: 2))
            let threads = 16, perThread = 1500
            let placed = Mutex<[[Placed]]>(Array(repeating: [], count: threads))
            let failures = ManagedAtomic<Int>(0)
            // Real threads, more than cores (concurrentPerform would run only as many as there
            // are cores): a writer preempted in the middle of a copy is what eviction must wait out.
            let done = DispatchGroup()
            for t in 0..<threads {
                done.enter()
                Thread {
                    var generator = SystemRandomNumberGenerator()
                    var mine: [Placed] = []
                    for n in 0..<perThread {
                        // Mostly small records (many copies per remap), some large (long copies).
                        let size = Int.random(in: 0..<8, using: &generator) == 0
                            ? Int.random(in: 1...maxSize, using: &generator) : Int.random(in: 1...200, using: &generator)
                        do {
                            let offset = try log.append(Self.record(thread: t, n: n, size: size))
                            mine.append(Placed(offset: offset, n: n, size: size))
                        } catch {
                            failures.wrappingIncrement(ordering: .relaxed)
                        }
                    }
                    placed.withLock { $0[t] = mine }
                    done.leave()
                }.start()
            }
            done.wait()
            XCTAssertEqual(failures.load(ordering: .relaxed), 0)
            XCTAssertLessThanOrEqual(log.mappedChunks, 2)
            try log.close()
            let data = readBytes(path)
            var total = 0
            var mismatches = 0
            let all = placed.withLock { $0 }
            for t in 0..<threads {
                for (offset, n, size) in all[t].map({ ($0.offset, $0.n, $0.size) }) {
                    total += size
                    guard offset + size <= data.count,
                          Array(data[offset..<(offset + size)]) == Self.record(thread: t, n: n, size: size) else {
                        mismatches += 1
                        continue
                    }
                }
            }
            XCTAssertEqual(mismatches, 0, "records not found whole at their offsets (chunk \(chunk))")
            XCTAssertEqual(data.count, total, "the file holds exactly the records (chunk \(chunk))")
        }
    }
}
