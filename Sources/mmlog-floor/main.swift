// mmlog-floor: how close one process's MMLog.append comes to the floor, a bare atomic
// fetch-add plus memcpy into a premapped, prefaulted shared file mapping; and how much
// memory a process writing a large log keeps resident. `mmlog-floor --help` lists the options.
//
// Floor and MMLog alternate run by run; the medians and their ratio are printed.
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Atomics
import MMLog
import ToolSupport

struct Floor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmlog-floor",
        abstract: "One process: MMLog.append against a bare fetch-add + memcpy loop; resident memory of a large log.",
        discussion: """
            Runs, alternating, the floor loop into a premapped file (its pages faulted in the \
            loop), the same loop into a file prefaulted before the clock (CPU only) and \
            MMLog.append, and prints the median ns per record of each after the command, date, \
            kernel and filesystem. With --rss-gib G it instead writes G GiB through MMLog with \
            default options and prints the largest resident set. Exit status: 0 when done, 1 when \
            a file cannot be made or written, 64 on bad arguments.
            """)

    @Option(help: "Records per run.") var ops = 2_000_000
    @Option(help: "Bytes per record.") var size = 128
    @Option(help: "Runs of each loop (alternating).") var runs = 5
    @Option(help: ArgumentHelp("Directory for the files.", valueName: "path")) var dir = "/tmp"
    @Option(name: .customLong("rss-gib"), help: ArgumentHelp("Instead: write this many GiB through MMLog and report the resident set.", valueName: "G"))
    var rssGiB = 0

    func validate() throws {
        for (name, value) in [("--ops", ops), ("--size", size), ("--runs", runs)] where value < 1 {
            throw ValidationError("\(name) must be at least 1 (got \(value)).")
        }
        if rssGiB < 0 { throw ValidationError("--rss-gib must not be negative (got \(rssGiB)).") }
    }

    func run() throws {
        let record = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        for i in 0..<size { record[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 1) }
        let source = UnsafeRawBufferPointer(record)
        for line in provenanceLines(directory: dir) { printOut(line) }
        if rssGiB > 0 {
            residentSet(gib: rssGiB, size: size, directory: dir, source: source)
        } else {
            compare(ops: ops, size: size, runs: runs, directory: dir, source: source)
        }
    }
}

/// Removes an MMLog's data file and its metadata.
func removeLog(_ path: String) {
    unlink(path)
    for file in MMLog.files(ofLog: path).dropFirst() { unlink(file) }
}

/// The floor: reserve with one fetch-add on a shared counter, copy into a mapping of the
/// whole file made beforehand (advised MADV_HUGEPAGE, as MMLog's chunks are). No growth, no
/// chunks, no checks. With `prefault`, the pages are also allocated and mapped writable
/// before the clock starts, leaving only CPU work.
func floorRun(ops: Int, size: Int, directory: String, source: UnsafeRawBufferPointer, prefault: Bool) -> UInt64 {
    let path = directory + "/mmlog-floor.data"
    let length = ops * size
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
    if fd < 0 || ftruncate(fd, off_t(length)) != 0 { die("\(path): \(String(cString: strerror(errno)))") }
    guard let map = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else {
        die("mmap: \(String(cString: strerror(errno)))")
    }
    // Huge page advice, as MMLog gives its chunks; then, for the CPU-only variant, prefault
    // for writing (MADV_POPULATE_WRITE = 23), so no store below takes a fault.
    _ = madvise(map, length, MADV_HUGEPAGE)
    if prefault && madvise(map, length, 23) != 0 { die("madvise(MADV_POPULATE_WRITE): \(String(cString: strerror(errno)))") }
    let counter = UnsafeAtomic<Int>.create(0)
    let start = monotonicNanoseconds()
    for _ in 0..<ops {
        let offset = counter.loadThenWrappingIncrement(by: size, ordering: .acquiring)
        (map + offset).copyMemory(from: source.baseAddress!, byteCount: size)
    }
    let elapsed = monotonicNanoseconds() - start
    counter.destroy()
    munmap(map, length)
    close(fd)
    unlink(path)
    return elapsed
}

func mmlogRun(ops: Int, directory: String, source: UnsafeRawBufferPointer) -> UInt64 {
    let path = directory + "/mmlog-floor.log"
    removeLog(path)
    do {
        let log = try MMLog(path: path)
        let start = monotonicNanoseconds()
        for _ in 0..<ops { try log.append(source) }
        let elapsed = monotonicNanoseconds() - start
        try log.close()
        removeLog(path)
        return elapsed
    } catch {
        die("\(error)")
    }
}

/// --rss-gib: writes `gib` GiB through MMLog with its default options and prints the largest
/// resident set the process had.
func residentSet(gib: Int, size: Int, directory: String, source: UnsafeRawBufferPointer) {
    let path = directory + "/mmlog-rss.log"
    removeLog(path)
    do {
        let log = try MMLog(path: path)
        let count = (gib << 30) / size
        for _ in 0..<count { try log.append(source) }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        try log.close()
        printOut("rss: wrote \(count * size) bytes in \(count) records of \(size) B with default options; "
            + "max resident set \(usage.ru_maxrss / 1024) MiB (\(log.chunkSize >> 20) MiB chunks, at most \(MMLog.Options.defaultMaxChunks) mapped)")
    } catch {
        die("\(error)")
    }
    removeLog(path)
}

/// The floor loops and MMLog.append, alternating run by run; prints the medians and ratios.
func compare(ops: Int, size: Int, runs: Int, directory: String, source: UnsafeRawBufferPointer) {
    var floors: [UInt64] = [], prefaulted: [UInt64] = [], mmlogs: [UInt64] = []
    for _ in 0..<runs {
        floors.append(floorRun(ops: ops, size: size, directory: directory, source: source, prefault: false))
        prefaulted.append(floorRun(ops: ops, size: size, directory: directory, source: source, prefault: true))
        mmlogs.append(mmlogRun(ops: ops, directory: directory, source: source))
    }
    func median(_ values: [UInt64]) -> UInt64 { values.sorted()[(values.count - 1) / 2] }
    let floorMedian = median(floors), prefaultedMedian = median(prefaulted), mmlogMedian = median(mmlogs)
    printOut("mmlog-floor: one process, \(ops) records of \(size) B, median of \(runs) alternating runs")
    printOut("| loop | ns per record | x floor |")
    printOut("|---|---|---|")
    printOut("| fetch-add + memcpy into a premapped file (floor: page faults in the loop) | \(fixed(Double(floorMedian) / Double(ops), 2)) | 1.00 |")
    printOut("| fetch-add + memcpy into a premapped, prefaulted file (CPU only) | \(fixed(Double(prefaultedMedian) / Double(ops), 2)) | \(fixed(Double(prefaultedMedian) / Double(floorMedian), 2)) |")
    printOut("| MMLog.append | \(fixed(Double(mmlogMedian) / Double(ops), 2)) | \(fixed(Double(mmlogMedian) / Double(floorMedian), 2)) |")
}

Floor.main()
