// mmlog-floor: how close one process's MMLog.append comes to the floor, a bare atomic
// fetch-add plus memcpy into a premapped, prefaulted shared file mapping; and how much
// memory a process writing a large log keeps resident.
//
//   mmlog-floor [--ops 2000000] [--size 128] [--runs 5] [--dir /tmp] [--rss-gib 1]
//
// Floor and MMLog alternate run by run; the medians and their ratio are printed.
#if canImport(Glibc)
import Glibc
#endif
import Atomics
import MMLog

func say(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

func die(_ text: String) -> Never {
    var line = "mmlog-floor: " + text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(1)
}

func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func fixed(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (value * scale).rounded()
    let integer = Int(scaled / scale)
    let fraction = Int(scaled) - integer * Int(scale)
    let digits = String(fraction)
    return decimals == 0 ? "\(integer)" : "\(integer)." + String(repeating: "0", count: decimals - digits.count) + digits
}

var ops = 2_000_000, size = 128, runs = 5, directory = "/tmp", rssGiB = 0
var argv = CommandLine.arguments.dropFirst()
while let flag = argv.popFirst() {
    let value = argv.popFirst() ?? ""
    switch flag {
    case "--ops": ops = Int(value) ?? 0
    case "--size": size = Int(value) ?? 0
    case "--runs": runs = Int(value) ?? 0
    case "--dir": directory = value
    case "--rss-gib": rssGiB = Int(value) ?? -1
    default: die("usage: mmlog-floor [--ops N] [--size S] [--runs R] [--dir D] [--rss-gib G]")
    }
}
if ops < 1 || size < 1 || runs < 1 || rssGiB < 0 { die("counts must be positive") }

let record = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
for i in 0..<size { record[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 1) }
let source = UnsafeRawBufferPointer(record)

/// The floor: reserve with one fetch-add on a shared counter, copy into a mapping of the
/// whole file made beforehand (advised MADV_HUGEPAGE, as MMLog's chunks are). No growth, no
/// chunks, no checks. With `prefault`, the pages
/// are also allocated and mapped writable before the clock starts, leaving only CPU work.
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
    let start = now()
    for _ in 0..<ops {
        let offset = counter.loadThenWrappingIncrement(by: size, ordering: .acquiring)
        (map + offset).copyMemory(from: source.baseAddress!, byteCount: size)
    }
    let elapsed = now() - start
    counter.destroy()
    munmap(map, length)
    close(fd)
    unlink(path)
    return elapsed
}

func mmlogRun(ops: Int, directory: String, source: UnsafeRawBufferPointer) -> UInt64 {
    let path = directory + "/mmlog-floor.log"
    unlink(path)
    unlink(path + ".mmlog")
    do {
        let log = try MMLog(path: path)
        let start = now()
        for _ in 0..<ops { try log.append(source) }
        let elapsed = now() - start
        try log.close()
        unlink(path)
        unlink(path + ".mmlog")
        return elapsed
    } catch {
        die("\(error)")
    }
}

if rssGiB > 0 {
    let path = directory + "/mmlog-rss.log"
    unlink(path)
    unlink(path + ".mmlog")
    do {
        let log = try MMLog(path: path)
        let count = (rssGiB << 30) / size
        for _ in 0..<count { try log.append(source) }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        try log.close()
        say("rss: wrote \(count * size) bytes in \(count) records of \(size) B with default options; "
            + "max resident set \(usage.ru_maxrss / 1024) MiB (\(log.chunkSize >> 20) MiB chunks, at most \(MMLog.Options.defaultMaxChunks) mapped)")
    } catch {
        die("\(error)")
    }
    unlink(path)
    unlink(path + ".mmlog")
    exit(0)
}

var floors: [UInt64] = [], prefaulted: [UInt64] = [], mmlogs: [UInt64] = []
for _ in 0..<runs {
    floors.append(floorRun(ops: ops, size: size, directory: directory, source: source, prefault: false))
    prefaulted.append(floorRun(ops: ops, size: size, directory: directory, source: source, prefault: true))
    mmlogs.append(mmlogRun(ops: ops, directory: directory, source: source))
}
func median(_ values: [UInt64]) -> UInt64 { values.sorted()[(values.count - 1) / 2] }
let floorMedian = median(floors), prefaultedMedian = median(prefaulted), mmlogMedian = median(mmlogs)
say("mmlog-floor: one process, \(ops) records of \(size) B, median of \(runs) alternating runs")
say("| loop | ns per record | x floor |")
say("|---|---|---|")
say("| fetch-add + memcpy into a premapped file (floor: page faults in the loop) | \(fixed(Double(floorMedian) / Double(ops), 2)) | 1.00 |")
say("| fetch-add + memcpy into a premapped, prefaulted file (CPU only) | \(fixed(Double(prefaultedMedian) / Double(ops), 2)) | \(fixed(Double(prefaultedMedian) / Double(floorMedian), 2)) |")
say("| MMLog.append | \(fixed(Double(mmlogMedian) / Double(ops), 2)) | \(fixed(Double(mmlogMedian) / Double(floorMedian), 2)) |")
