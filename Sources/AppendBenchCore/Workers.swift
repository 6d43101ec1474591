#if canImport(Glibc)
import Glibc
#endif
import Atomics
import BenchRecords
import CBackends
import Histogram
import ToolSupport

/// What one timed run of one backend measured.
public struct Measurement: Sendable {
    /// From the start barrier's release until the last worker finished and closed.
    public var totalNanoseconds: UInt64
    /// From the first fork until every worker had opened its backend.
    public var setupNanoseconds: UInt64
    /// Per-call latency over every worker, when asked for.
    public var latency: Histogram<UInt64>?
    /// One line per worker that failed or died ("worker 2 (pid 123): write(...): ...").
    public var failures: [String]
    /// With a timeline: records appended by all workers in each interval since the start.
    public var timeline: [Int] = []
    /// CPU time the hypervisor gave to others while the workers ran (`StealClock`), or nil
    /// where the kernel does not account it.
    public var stealNanoseconds: UInt64?
    /// CPU time the workers used from the start barrier's release until they exited: wait4's
    /// rusage of each, less what it had used by the release (forking, opening, the barrier).
    public var workerCPU = CPUTime()
    /// CPU time the backend's run service used after its own setup (the CLA's collector).
    public var serviceCPU = CPUTime()
    /// Each worker's time from the start barrier's release until it had closed its backend.
    public var workerNanoseconds: [UInt64] = []

    public init(totalNanoseconds: UInt64, setupNanoseconds: UInt64, latency: Histogram<UInt64>?, failures: [String]) {
        self.totalNanoseconds = totalNanoseconds
        self.setupNanoseconds = setupNanoseconds
        self.latency = latency
        self.failures = failures
    }

    /// Everything the run's processes used, workers and service.
    public var cpu: CPUTime { workerCPU + serviceCPU }
}

/// Forks `procs` workers from this (single-threaded) process, each appending `ops` records
/// through backend `B`, and measures them from a common start barrier.
///
/// Workers and parent share one anonymous `MAP_SHARED` region: a ready count and a start
/// flag, then a slot per worker for its result. A worker that fails writes why into its
/// slot and exits 1; one that dies is found by `wait4`. Neither is ever counted as done.
/// A backend's run service (`AppendBackend.prepareRun`) is started before the workers fork
/// and finished after they exit; the run ends no earlier than its last work.
enum WorkerPool {
    struct Plan {
        var procs: Int
        var ops: Int
        var config: BackendConfig
        var latency: Bool
        /// Where workers leave their latency histograms for the parent.
        var scratchDirectory: String
        /// Called about every 200 ms while workers run, with records appended so far.
        var progress: ((Int) -> Void)?
        /// The parent's pid, naming its workers' scratch files.
        var owner: pid_t = 0
        /// Make records durable (`sync`) after every this many, per worker; 0: never.
        var syncEvery = 0
        /// Record each worker's progress every this many nanoseconds; 0: no timeline.
        var timelineInterval: UInt64 = 0
        /// Records per second each worker appends, paced against an absolute schedule; 0: as
        /// fast as it can.
        var rate = 0
    }

    /// Most timeline intervals recorded per worker; later ones are dropped.
    static let timelineCapacity = 8192

    // Shared region layout.
    private static let readyOffset = 0
    private static let startOffset = 64
    private static let slotsOffset = 128
    private static let slotSize = 1024
    private static let messageCapacity = slotSize - 64
    // Slot fields.
    private static let stateField = 0     // 0 starting, 1 done, 2 failed
    private static let endField = 8       // monotonic ns after close
    private static let countField = 16    // records appended so far (updated every 1024)
    private static let lengthField = 24   // message length
    private static let cpuField = 32      // CPUTime (two words) at the start barrier's release
    private static let messageField = 64

    static func measure<B: AppendBackend>(_ backend: B.Type, _ plan: Plan) -> Measurement {
        var plan = plan
        plan.owner = getpid()
        let timelineWords = plan.timelineInterval > 0 ? timelineCapacity : 0
        let timelineOffset = slotsOffset + plan.procs * slotSize
        let regionSize = timelineOffset + plan.procs * timelineWords * 8
        guard let region = mmap(nil, regionSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0),
              region != MAP_FAILED
        else {
            return Measurement(totalNanoseconds: 0, setupNanoseconds: 0, latency: nil,
                               failures: ["\(HarnessError.system("mmap(\(regionSize) shared bytes for the workers)"))"])
        }
        defer { munmap(region, regionSize) }
        let ready = atomic(region, readyOffset)
        let start = atomic(region, startOffset)

        let forkedAt = monotonicNanoseconds()
        let service: (any RunService)?
        do {
            service = try B.prepareRun(config: &plan.config, workers: plan.procs)
        } catch {
            return Measurement(totalNanoseconds: 0, setupNanoseconds: monotonicNanoseconds() - forkedAt, latency: nil,
                               failures: ["\(B.key): prepare: \(error)"])
        }
        let serviceProcesses = Set(service?.processes ?? [])
        var pids: [pid_t] = []
        var failures: [String] = []
        for w in 0..<plan.procs {
            let pid = fork()
            if pid == 0 {
                runWorker(backend, w, plan, slot: region + slotsOffset + w * slotSize, ready: ready, start: start,
                          timeline: (region + timelineOffset + w * timelineWords * 8).bindMemory(to: UInt64.self, capacity: timelineWords))
            }
            if pid < 0 {
                failures.append("\(HarnessError.system("fork of worker \(w)"))")
                break
            }
            pids.append(pid)
        }

        // Every child that exits is reaped here: a worker, or a process of the run service
        // (kept for its `finish`). Returns false when there is nothing left to wait for.
        var exited: [pid_t: ProcessExit] = [:]
        var serviceExits: [pid_t: ProcessExit] = [:]
        func reap(wait: Bool) -> Bool {
            do {
                guard let (pid, exit) = try reapChild(-1, wait: wait) else { return true }
                if serviceProcesses.contains(pid) { serviceExits[pid] = exit } else { exited[pid] = exit }
                return true
            } catch {
                return false
            }
        }

        // Wait until every worker has opened its backend (or died trying).
        while Int(ready.load(ordering: .acquiring)) + exited.count < pids.count && failures.isEmpty {
            let before = exited.count + serviceExits.count
            if !reap(wait: false) { break }
            if exited.count + serviceExits.count == before { usleep(50) }
        }
        let setup = monotonicNanoseconds() - forkedAt
        let stealBefore = StealClock.read()
        let startedAt = monotonicNanoseconds()
        start.store(startedAt, ordering: .releasing)  // pairs with the workers' acquiring spin

        // Wait for them all, reporting progress.
        let deadline = startedAt + 1_000_000_000
        while exited.count < pids.count {
            let before = exited.count + serviceExits.count
            if !reap(wait: plan.progress == nil) { break }
            if exited.count + serviceExits.count == before, let progress = plan.progress {
                usleep(200_000)
                if monotonicNanoseconds() > deadline {
                    progress((0..<pids.count).reduce(0) { $0 + Int(load(region, $1, countField)) })
                }
            }
        }

        var last: UInt64 = startedAt
        var workerCPU = CPUTime()
        var workerNanoseconds: [UInt64] = []
        for (w, pid) in pids.enumerated() {
            let slot = region + slotsOffset + w * slotSize
            let state = slot.load(fromByteOffset: stateField, as: UInt64.self)
            let exit = exited[pid]
            if let exit { workerCPU = workerCPU + (exit.cpu - CPUTime.load(from: slot + cpuField)) }
            if state == 1 && exit?.succeeded == true {
                let end = slot.load(fromByteOffset: endField, as: UInt64.self)
                last = max(last, end)
                workerNanoseconds.append(end &- startedAt)
                continue
            }
            var why: String
            if state == 2 {
                let length = Int(slot.load(fromByteOffset: lengthField, as: UInt64.self))
                why = String(decoding: UnsafeRawBufferPointer(start: slot + messageField, count: min(length, messageCapacity)), as: UTF8.self)
            } else if let exit, exit.signal != nil {
                why = "\(exit) after \(load(region, w, countField)) records"
            } else if let exit {
                why = "\(exit) without reporting"
            } else {
                why = "could not be waited for"
            }
            failures.append("worker \(w) (pid \(pid)): \(why)")
        }

        // The service finishes its queue after the workers; its failure is the likelier cause
        // of theirs (a dead collector closes every worker's socket), so it is listed first.
        var serviceCPU = CPUTime()
        if let service {
            let outcome = service.finish(workersSucceeded: failures.isEmpty, reaped: serviceExits)
            serviceCPU = outcome.cpu
            failures = outcome.failures + failures
            if let finishedAt = outcome.finishedAt { last = max(last, finishedAt) }
        }
        let stealAfter = StealClock.read()

        var latency: Histogram<UInt64>?
        if plan.latency && failures.isEmpty {
            var merged = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            for w in 0..<plan.procs {
                let path = latencyPath(plan, w)
                readHistogram(path, into: &merged)
                removeFile(path)
            }
            latency = merged
        }
        var measurement = Measurement(totalNanoseconds: last - startedAt, setupNanoseconds: setup, latency: latency, failures: failures)
        if let stealBefore, let stealAfter { measurement.stealNanoseconds = stealAfter &- stealBefore }
        measurement.workerCPU = workerCPU
        measurement.serviceCPU = serviceCPU
        measurement.workerNanoseconds = workerNanoseconds
        if timelineWords > 0 && failures.isEmpty {
            let intervals = min(Int((last - startedAt) / plan.timelineInterval) + 1, timelineWords)
            var totals = [Int](repeating: 0, count: intervals)
            for w in 0..<plan.procs {
                // Each worker stored its cumulative count at its last check in each interval;
                // intervals with no check carry the previous count forward.
                let counts = (region + timelineOffset + w * timelineWords * 8).assumingMemoryBound(to: UInt64.self)
                var previous = 0
                for b in 0..<intervals {
                    let cumulative = max(previous, Int(counts[b]))
                    totals[b] += cumulative - previous
                    previous = cumulative
                }
            }
            measurement.timeline = totals
        }
        return measurement
    }

    /// The body of worker `w`, in the child. Never returns.
    private static func runWorker<B: AppendBackend>(
        _ backend: B.Type, _ w: Int, _ plan: Plan, slot: UnsafeMutableRawPointer,
        ready: UnsafeAtomic<UInt64>, start: UnsafeAtomic<UInt64>, timeline: UnsafeMutablePointer<UInt64>
    ) -> Never {
        func fail(_ message: String) -> Never {
            let bytes = Array(message.utf8.prefix(messageCapacity))
            bytes.withUnsafeBytes { (slot + messageField).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            slot.storeBytes(of: UInt64(bytes.count), toByteOffset: lengthField, as: UInt64.self)
            slot.storeBytes(of: 2, toByteOffset: stateField, as: UInt64.self)
            _exit(1)
        }

        let instance: B
        do {
            instance = try B(config: plan.config)
        } catch {
            ready.wrappingIncrement(ordering: .releasing)
            fail("\(B.key): open: \(error)")
        }
        let record = UnsafeMutableRawBufferPointer.allocate(byteCount: plan.config.recordSize, alignment: 64)
        let count = UnsafeAtomic<UInt64>(at: (slot + countField).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
        var histogram = plan.latency
            ? Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three) : nil

        let pacing = plan.rate > 0
        // A paced worker's sleeps should end on its schedule, not up to 50 us later.
        if pacing { _ = cb_set_timer_slack(1) }

        ready.wrappingIncrement(ordering: .releasing)
        while start.load(ordering: .acquiring) == 0 { sched_yield() }
        // CPU time counts from here: forking, opening and the barrier are setup.
        CPUTime.ofThisProcess().store(to: slot + cpuField)

        // Everything done every so many records (progress, --fsync-every, --timeline) waits
        // for `i == next`, so the default loop pays one compare per record.
        let startedAt = start.load(ordering: .relaxed)
        let syncEvery = plan.syncEvery > 0 ? plan.syncEvery : Int.max
        let timelineStep = plan.timelineInterval > 0 ? 256 : Int.max
        var nextProgress = 1024, nextSync = syncEvery, nextTimeline = timelineStep
        var next = min(nextProgress, nextSync, nextTimeline)
        func event(_ i: Int) throws {
            if i == nextProgress {
                count.store(UInt64(i), ordering: .relaxed)
                nextProgress += 1024
            }
            if i == nextSync {
                try instance.sync()
                nextSync += syncEvery
            }
            if i == nextTimeline {
                let interval = Int((monotonicNanoseconds() - startedAt) / plan.timelineInterval)
                if interval < timelineCapacity { timeline[interval] = UInt64(i) }
                nextTimeline += timelineStep
            }
            next = min(nextProgress, nextSync, nextTimeline)
        }

        var i = 0
        do {
            if histogram == nil && !pacing {
                while i < plan.ops {
                    RecordFormat.encode(worker: w, index: i, into: record, B.recordEncoding)
                    try instance.append(UnsafeRawBufferPointer(record))
                    i += 1
                    if i == next { try event(i) }
                }
            } else {
                // Paced, a record's latency runs from when it was due, not from when the worker
                // got to it: a stall counts against every record it delayed (coordinated
                // omission), as HdrHistogram's corrected recording would count it.
                while i < plan.ops {
                    RecordFormat.encode(worker: w, index: i, into: record, B.recordEncoding)
                    let before: UInt64
                    if pacing {
                        before = scheduledStart(record: i, worker: w, procs: plan.procs, rate: plan.rate, from: startedAt)
                        if monotonicNanoseconds() < before { sleepUntil(before) }
                    } else {
                        before = monotonicNanoseconds()
                    }
                    try instance.append(UnsafeRawBufferPointer(record))
                    if histogram != nil { _ = histogram!.record(monotonicNanoseconds() &- before) }
                    i += 1
                    if i == next { try event(i) }
                }
            }
            try instance.finish()
        } catch {
            try? instance.close()
            fail("\(B.key): record \(i): \(error)")
        }
        do { try instance.close() } catch { fail("\(B.key): close: \(error)") }
        let end = monotonicNanoseconds()
        slot.storeBytes(of: end, toByteOffset: endField, as: UInt64.self)
        if plan.timelineInterval > 0 {
            let interval = Int((end - startedAt) / plan.timelineInterval)
            if interval < timelineCapacity { timeline[interval] = UInt64(i) }
        }
        count.store(UInt64(i), ordering: .relaxed)
        if let histogram {
            do { try writeHistogram(histogram, to: latencyPath(plan, w)) } catch { fail("\(B.key): latency: \(error)") }
        }
        slot.storeBytes(of: 1, toByteOffset: stateField, as: UInt64.self)
        _exit(0)
    }

    /// When record `i` of worker `w` is due under `--rate`: on an absolute schedule from the
    /// start barrier (no drift: a late record does not push the ones after it), each worker
    /// offset by `w / procs` of an interval so that the workers do not all append at once.
    /// A worker that falls behind appends without sleeping until it is back on schedule.
    static func scheduledStart(record i: Int, worker w: Int, procs: Int, rate: Int, from start: UInt64) -> UInt64 {
        let slot = UInt64(i) * UInt64(procs) + UInt64(w)
        let scaled = slot.multipliedFullWidth(by: 1_000_000_000)
        return start + UInt64(rate * procs).dividingFullWidth(scaled).quotient
    }

    private static func atomic(_ region: UnsafeMutableRawPointer, _ offset: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (region + offset).bindMemory(to: UnsafeAtomic<UInt64>.Storage.self, capacity: 1))
    }

    private static func load(_ region: UnsafeMutableRawPointer, _ w: Int, _ field: Int) -> UInt64 {
        (region + slotsOffset + w * slotSize + field).load(as: UInt64.self)
    }

    private static func latencyPath(_ plan: Plan, _ w: Int) -> String {
        "\(plan.scratchDirectory)/.latency-\(plan.owner)-\(w)"
    }

    /// Histograms travel from worker to parent as (value, count) pairs of UInt64.
    private static func writeHistogram(_ histogram: Histogram<UInt64>, to path: String) throws {
        var words: [UInt64] = []
        for bucket in histogram.recordedValues() {
            words.append(bucket.value)
            words.append(UInt64(bucket.count))
        }
        let fd = try openFile(path, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        defer { close(fd) }
        try words.withUnsafeBytes { try writeAll(fd, $0, path) }
    }

    /// Adds the pairs a worker wrote to `histogram`; a worker whose file is missing or cut
    /// short has already failed the run.
    private static func readHistogram(_ path: String, into histogram: inout Histogram<UInt64>) {
        guard let bytes = readFileBytes(path) else { return }
        bytes.withUnsafeBytes { raw in
            for pair in stride(from: 0, to: raw.count - 15, by: 16) {
                _ = histogram.record(raw.loadUnaligned(fromByteOffset: pair, as: UInt64.self),
                                     count: raw.loadUnaligned(fromByteOffset: pair + 8, as: UInt64.self))
            }
        }
    }
}
