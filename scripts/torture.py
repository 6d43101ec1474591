#!/usr/bin/env python3
"""The MMLog nemesis (issue 21), driven by scripts/torture.sh: see its header for usage.

A round: one new log on a tmpfs of its own; 4-7 mmlog-writer processes (1-4 threads, text
lines of 24-3000 B, some syncing, some rotating by size, each recording per record in an
--ack-file what it had started / appended / failed); 2 `mmlog tail -F` readers; and, at random
moments drawn from the round's seed, the faults: SIGKILL or SIGSTOP/SIGCONT of a writer, a new
writer opening mid-round, `mmlog rotate` (also killed midway), a full disk (a ballast file),
a reader killed and restarted, a jump of the writers' clocks (scripts/lib/clockshim.c). Then
every writer is let finish, the readers catch up, and the round is checked (check_files,
check_reader, check_usable). A failing round's files are kept.
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

LINE = re.compile(rb"^w(\d+) r(\d+) (x*)$")
STAMPED = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")
ACK_APPENDING, ACK_APPENDED, ACK_FAILED = 1, 2, 3
FAULT_KINDS = ["kill-writer", "stop-writer", "start-writer", "rotate", "kill-rotator",
               "disk-full", "kill-reader", "clock-jump"]


class Stop(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: clean up and leave."""


def on_signal(signum, _frame):
    raise Stop(signal.Signals(signum).name)


def log_uniform(rng, low, high):
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


class Child:
    """A process the torture started: always stopped and reaped by cleanup()."""
    everyone = []

    def __init__(self, argv, stdout, stderr, env=None):
        self.argv = argv
        self.out_path, self.err_path = stdout, stderr
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self.killed_by_us = False
        self.stopped = False
        self.stuck = None
        Child.everyone.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        if self.running():
            self.killed_by_us = True
            self.signal(signal.SIGKILL)
            self.proc.wait()

    def stderr_text(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def crash(self):
        """The Swift runtime's crash report in one line ("Bus error at 0x... in memset <- static
        LogFile.openOnce(...) (Opening.swift) <- ..."), or None. A process can outlive its report:
        the faulting store is retried when the handler returns, and succeeds if the disk has space
        again by then."""
        text = self.stderr_text()
        m = re.search(r"\*\*\* Program crashed: (.*?) \*\*\*", text)
        if not m:
            return None
        block = text[text.find("crashed:\n"):].split("\n\n")[1] if "crashed:\n" in text else ""
        return m.group(1) + " in " + frames(block)

    def stack(self):
        """Every thread's stack, by gdb (for a process that hangs), saved beside its output; the
        stuck threads' first frames of our code, in one line."""
        if shutil.which("gdb") is None:
            return "(no stack: gdb is not installed)"
        gdb = subprocess.run(["gdb", "-p", str(self.pid), "-batch", "-ex", "thread apply all bt 30"],
                             capture_output=True, text=True, timeout=60)
        with open(self.err_path + ".gdb", "w") as f:
            f.write(gdb.stdout + gdb.stderr)
        threads = re.split(r"\nThread \d+ ", gdb.stdout)
        summaries = sorted({frames(t, gdb=True) for t in threads if "Sources/" in t})
        return " | ".join(summaries) or "(no stack)"

    def how_it_ended(self):
        code = self.proc.poll()
        if code is None:
            return "running"
        if code < 0:
            return signal.Signals(-code).name + (" (ours)" if self.killed_by_us else "")
        return f"exit {code}"


def frames(block, gdb=False, count=4):
    """The first frames of one thread's stack that are in our sources, as "f (File.swift:12) <- g (...)"."""
    out = []
    for line in block.splitlines():
        if gdb:
            m = re.match(r"#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) .*? at (\S+Sources/\S+)", line)
        else:
            m = re.search(r"0x[0-9a-f]+ (?:specialized )?(.*?)(?: \+ \d+)? in \S+ at (\S+)", line)
        if m and "compiler-generated" not in m.group(2):
            name = m.group(1)
            if gdb and name.startswith("$s"):
                name = demangle(name)
            frame = f"{name[:80]} ({m.group(2).split('/')[-1]})"
            if not out or not out[-1].startswith(name[:80]):
                out.append(frame)
        elif not out and not gdb:
            top = re.search(r"0x[0-9a-f]+ (\S+)", line)
            if top:
                out.append(top.group(1))
        if len(out) >= count:
            break
    return " <- ".join(out)


def demangle(name):
    try:
        return subprocess.run(["/opt/swift/usr/bin/swift-demangle", "-simplified", "-compact", name],
                              capture_output=True, text=True, timeout=10).stdout.strip() or name
    except (OSError, subprocess.SubprocessError):
        return name


class Writer:
    def __init__(self, number, first_worker, spec, ctl):
        self.number = number
        self.first_worker = first_worker
        self.spec = spec          # threads, size, rate, ops, sync_every, rotate_at
        self.ack_path = os.path.join(ctl, f"writer-{number}.ack")
        self.child = None
        self.started_at = None

    def workers(self):
        return range(self.first_worker, self.first_worker + self.spec["threads"])

    def describe(self):
        s = self.spec
        extra = (f" sync-every {s['sync_every']}" if s["sync_every"] else "") + \
                (f" rotate-at {s['rotate_at']}" if s["rotate_at"] else "")
        return (f"writer {self.number} (pid {self.child.pid if self.child else '-'}, workers "
                f"w{self.first_worker}..w{self.first_worker + s['threads'] - 1}, {s['threads']} thread(s) x "
                f"{s['ops']} x {s['size']} B at {s['rate']}/s{extra})")


class Round:
    def __init__(self, torture, number, seconds):
        self.t = torture
        self.number = number
        self.seed = f"{torture.seed}/{number}"
        self.rng = random.Random(self.seed)
        self.seconds = seconds
        self.ctl = os.path.join(torture.workdir, f"round-{number}")
        self.dir = os.path.join(torture.fsdir, f"round-{number}")
        self.path = os.path.join(self.dir, "app.log")
        os.makedirs(self.ctl)
        os.makedirs(self.dir)
        self.clock_file = os.path.join(self.ctl, "clock")
        with open(self.clock_file, "wb") as f:
            f.write(struct.pack("qq", 0, 0))
        self.clock = [0, 0]
        self.writers = []
        self.readers = []         # [(reader number, incarnation, Child, -n)]
        self.rotators = []
        self.next_worker = 0
        self.ballast = None
        self.faults = {k: 0 for k in FAULT_KINDS}
        self.notes = []           # facts that are not failures (ENOSPC at open, ...)
        self.failures = []        # (kind, text)
        self.records = 0
        self.events = []          # (time, what, ...)
        self.chunk_size = self.rng.choice([64 << 10, 256 << 10, 2 << 20])
        self.log_lines = []
        self.pending = []         # (time, kind, argument), due in time order

    # --- what the round does -------------------------------------------------------------

    def say(self, text):
        self.log_lines.append(f"{time.monotonic() - self.t0:7.3f} {text}")

    def fail(self, kind, text):
        self.failures.append((kind, text))
        self.say(f"FAIL {kind}: {text}")

    def writer_env(self):
        env = dict(os.environ)
        env["LD_PRELOAD"] = self.t.shim
        env["CLOCKSHIM_FILE"] = self.clock_file
        return env

    def new_writer_spec(self, seconds_left):
        rng = self.rng
        threads = rng.randint(1, 4)
        size = log_uniform(rng, 24, 3000)
        # The round's bytes stay under a fifth of the tmpfs (about a seventh of that per writer),
        # and no thread appends more than 800 records a second: the machine is shared.
        budget = self.t.fs_bytes / 5 / 7 / max(self.seconds, 1)
        rate = max(5, min(800, int(rng.uniform(0.2, 1.0) * budget / threads / size)))
        return {"threads": threads, "size": size, "rate": rate,
                "ops": max(1, int(rate * max(seconds_left, 0.5))),
                "sync_every": rng.choice([0, 0, 1, rng.randint(2, 64)]) if rng.random() < 0.4 else 0,
                "rotate_at": log_uniform(rng, 256 << 10, 4 << 20) if rng.random() < 0.3 else 0}

    def start_writer(self, spec):
        w = Writer(len(self.writers), self.next_worker, spec, self.ctl)
        self.next_worker += spec["threads"]
        argv = [self.t.writer_bin, "--path", self.path, "--text", "--keep-going",
                "--worker", str(w.first_worker), "--threads", str(spec["threads"]),
                "--ops", str(spec["ops"]), "--size", str(spec["size"]), "--rate", str(spec["rate"]),
                "--chunk-size", str(self.chunk_size), "--ack-file", w.ack_path]
        if spec["sync_every"]:
            argv += ["--sync-every", str(spec["sync_every"])]
        if spec["rotate_at"]:
            argv += ["--rotate-at-bytes", str(spec["rotate_at"])]
        w.child = Child(argv, os.path.join(self.ctl, f"writer-{w.number}.out"),
                        os.path.join(self.ctl, f"writer-{w.number}.err"), env=self.writer_env())
        w.started_at = time.monotonic()
        self.writers.append(w)
        self.say("start " + w.describe())
        return w

    def start_reader(self, number, lines):
        incarnation = sum(1 for r in self.readers if r[0] == number)
        out = os.path.join(self.ctl, f"reader-{number}.{incarnation}.out")
        child = Child([self.t.mmlog_bin, "tail", "-F", "-n", str(lines), self.path], out, out + ".err")
        self.readers.append((number, incarnation, child, lines))
        self.say(f"start reader {number}.{incarnation} (pid {child.pid}, -n {lines})")

    def live(self, kind):
        if kind == "writer":
            return [w for w in self.writers if w.child.running()]
        return [r for r in self.readers if r[2].running()]

    def fill_disk(self):
        self.ballast = os.path.join(self.t.fsdir, "ballast")
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            offset, step = 0, 64 << 20
            while step >= 4096:
                try:
                    os.posix_fallocate(fd, offset, step)
                    offset += step
                except OSError:
                    step //= 2
        finally:
            os.close(fd)
        self.say(f"disk full: ballast {offset} B, {os.statvfs(self.t.fsdir).f_bavail * 4096} B left")

    def free_disk(self):
        if self.ballast:
            os.unlink(self.ballast)
            self.ballast = None
            self.say("disk freed")

    def jump_clocks(self):
        rng = self.rng
        mono = rng.choice([10**8, 10**9, 30 * 10**9, 3600 * 10**9])
        real = rng.choice([10**9, 59 * 10**9, 3600 * 10**9, 86400 * 10**9, 366 * 86400 * 10**9])
        which = rng.choice(["monotonic", "realtime", "both"])
        if which != "realtime":
            self.clock[0] += mono
        if which != "monotonic":
            self.clock[1] += real
        fd = os.open(self.clock_file, os.O_WRONLY)
        os.pwrite(fd, struct.pack("qq", *self.clock), 0)
        os.close(fd)
        self.say(f"clock jump ({which}): writers' clocks now +{self.clock[0] / 1e9:.1f} s monotonic, "
                 f"+{self.clock[1] / 1e9:.0f} s realtime")

    def rotate(self, kill_after=None):
        n = len(self.rotators)
        child = Child([self.t.mmlog_bin, "rotate", self.path], os.path.join(self.ctl, f"rotate-{n}.out"),
                      os.path.join(self.ctl, f"rotate-{n}.err"), env=self.writer_env())
        self.rotators.append(child)
        if kill_after is None:
            self.say(f"mmlog rotate (pid {child.pid})")
        else:
            time.sleep(kill_after)
            child.kill()
            self.say(f"mmlog rotate killed after {kill_after * 1000:.0f} ms: {child.how_it_ended()}")

    def schedule(self):
        """The round's faults, drawn from its seed: (time, kind, choice, duration)."""
        rng = self.rng
        weights = {"kill-writer": 2, "stop-writer": 2, "start-writer": 1, "rotate": 2, "kill-rotator": 1,
                   "disk-full": 1.5 if self.t.tmpfs else 0, "kill-reader": 1.5, "clock-jump": 1}
        if self.t.args.faults is not None:
            chosen = [] if self.t.args.faults == "none" else self.t.args.faults.split(",")
            unknown = set(chosen) - set(weights)
            if unknown:
                raise SystemExit(f"torture: --faults: unknown kind(s) {sorted(unknown)}; kinds: {', '.join(weights)}")
            weights = {k: (v if k in chosen else 0) for k, v in weights.items()}
        kinds = list(weights)
        if not any(weights.values()):
            return []
        plan, at = [], rng.uniform(0.3, 1.5)
        while at < self.seconds - 0.5:
            kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
            plan.append((at, kind, rng.random(), rng.uniform(0.05, 3.0)))
            at += rng.expovariate(1 / 0.8)
        return plan

    def run(self):
        self.t0 = time.monotonic()
        rng = self.rng
        self.say(f"round {self.number}, seed {self.seed}, {self.seconds:.1f} s, chunk {self.chunk_size} B, log {self.path}")
        for reader in range(2):
            self.start_reader(reader, 0)
        for _ in range(rng.randint(4, 7)):
            delay = rng.choice([0, 0, 0, rng.uniform(0, self.seconds / 2)])
            self.pending.append((delay, "start-writer-initial", self.new_writer_spec(self.seconds - delay)))
        for at, kind, choice, duration in self.schedule():
            self.pending.append((at, kind, (choice, duration)))
        self.pending.sort(key=lambda e: e[0])
        while self.pending:
            at, kind, arg = self.pending.pop(0)
            now = time.monotonic() - self.t0
            if at > now:
                time.sleep(at - now)
            self.act(kind, arg, at)
        self.free_disk()
        for w in self.writers:
            if w.child.stopped:
                w.child.signal(signal.SIGCONT)
                w.child.stopped = False
        self.finish()

    def act(self, kind, arg, at):
        if kind == "start-writer-initial":
            self.start_writer(arg)
            return
        if kind == "cont":
            arg.signal(signal.SIGCONT)
            arg.stopped = False
            self.say(f"SIGCONT pid {arg.pid}")
            return
        if kind == "free-disk":
            self.free_disk()
            return
        if kind == "restart-reader":
            self.start_reader(*arg)
            return
        choice, duration = arg
        left = self.seconds - at
        if kind in ("kill-writer", "stop-writer"):
            live = [w for w in self.live("writer") if not w.child.stopped]
            if not live:
                return
            w = live[int(choice * len(live))]
            if kind == "kill-writer":
                w.child.kill()
                self.say(f"SIGKILL {w.describe()}")
                if duration < 2.2 and left > 1:   # mostly replaced, by a new process with new workers
                    self.insert(at + duration / 3, "start-writer-initial", self.new_writer_spec(left - duration / 3))
            else:
                w.child.signal(signal.SIGSTOP)
                w.child.stopped = True
                self.say(f"SIGSTOP {w.describe()} for {duration:.2f} s")
                self.insert(at + duration, "cont", w.child)
        elif kind == "start-writer":
            self.start_writer(self.new_writer_spec(left))
        elif kind == "rotate":
            self.rotate()
        elif kind == "kill-rotator":
            self.rotate(kill_after=duration / 100)
        elif kind == "disk-full":
            if self.ballast:
                return
            self.fill_disk()
            self.insert(at + min(duration, 3.0), "free-disk", None)
        elif kind == "kill-reader":
            live = self.live("reader")
            if not live:
                return
            number, incarnation, child, _ = live[int(choice * len(live))]
            child.kill()
            self.say(f"SIGKILL reader {number}.{incarnation}")
            self.insert(at + duration / 2, "restart-reader", (number, int(choice * 1000) % 6))
        elif kind == "clock-jump":
            self.jump_clocks()
        self.faults[kind] += 1

    def insert(self, at, kind, arg):
        self.pending.append((at, kind, arg))
        self.pending.sort(key=lambda e: e[0])

    # --- the end of a round, and its checks ------------------------------------------------

    def finish(self):
        deadline = time.monotonic() + 60
        for w in self.writers:
            left = max(0.0, deadline - time.monotonic())
            try:
                w.child.proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                stat = subprocess.run([self.t.mmlog_bin, "stat", self.path], capture_output=True, text=True)
                self.fail("writer-wedged", f"{w.describe()} still running 60 s after the round's end: {w.child.stack()}")
                self.say(f"mmlog stat: {stat.stdout.strip()[:3000]}")
                w.child.kill()
        for w in self.writers:
            ended = w.child.how_it_ended()
            err = w.child.stderr_text()
            crash = w.child.crash()
            self.say(f"{w.describe()}: {ended}; {crash or err[:300]}")
            if crash:
                survived = "" if w.child.proc.returncode < 0 else f", then went on ({ended}: the store was retried after the report)"
                self.fail("writer-crashed", f"{w.describe()}: {crash}{survived}")
            elif w.child.proc.returncode < 0 and not w.child.killed_by_us:
                self.fail("writer-crashed", f"{w.describe()} died of {ended}; stderr: {err[:300]}")
            elif w.child.proc.returncode > 0:
                if "No space left" in err or "ENOSPC" in err:
                    self.notes.append(f"writer {w.number} refused at open: {err[:200]}")
                else:
                    self.fail("writer-error", f"{w.describe()} {ended}: {err[:500]}")
        for r in self.rotators:
            try:
                r.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.fail("rotate-hung", f"mmlog rotate (pid {r.pid}) still running 60 s after the round's end: {r.stack()}")
                r.kill()
            crash = r.crash()
            self.say(f"mmlog rotate (pid {r.pid}): {r.how_it_ended()} {open(r.out_path).read().strip()} {crash or r.stderr_text()[:200]}")
            if crash:
                self.fail("rotator-crashed", f"mmlog rotate (pid {r.pid}) {r.how_it_ended()}: {crash}")
            elif r.proc.returncode is not None and r.proc.returncode < 0 and not r.killed_by_us:
                self.fail("rotator-crashed", f"mmlog rotate (pid {r.pid}) died of {r.how_it_ended()}")
            elif r.proc.returncode not in (0, None) and r.proc.returncode > 0 and "No space left" not in r.stderr_text():
                self.fail("rotator-error", f"mmlog rotate (pid {r.pid}) {r.how_it_ended()}: {r.stderr_text()[:300]}")
        states = self.read_acks()
        order = self.check_files(states, "files")
        self.catch_up_readers(order)
        for number, incarnation, child, lines in self.readers:
            self.check_reader(number, incarnation, child, lines, order)
        self.check_usable(states)

    def read_acks(self, report=True):
        """{(worker, index): state} for every record a writer started, and the writer of each worker."""
        self.writer_of = {}
        states = {}
        for w in self.writers:
            for worker in w.workers():
                self.writer_of[worker] = w
            try:
                with open(w.ack_path, "rb") as f:
                    acks = f.read()
            except FileNotFoundError:
                acks = b""   # the writer never got as far as making it
            ops = w.spec["ops"]
            for t, worker in enumerate(w.workers()):
                row = acks[t * ops:(t + 1) * ops]
                for i, state in enumerate(row):
                    if state:
                        states[(worker, i)] = state
                        if report and state == ACK_APPENDING and w.child.proc.returncode == 0 and not w.child.crash():
                            self.fail("ack-in-flight", f"{w.describe()} {w.child.how_it_ended()} left record w{worker} r{i} in flight")
        return states

    def files_in_order(self):
        """The log's data files oldest first (as `mmlog tail -F` orders them), and the others."""
        base = os.path.basename(self.path)
        stamped, others = [], []
        for name in os.listdir(self.dir):
            if name in (base, base + ".mmlog"):
                continue
            suffix = name[len(base) + 1:] if name.startswith(base + ".") else None
            m = STAMPED.match(suffix) if suffix is not None else None
            if m:
                stamped.append((m.group(1), int(m.group(2) or 1), name))
            elif suffix and suffix.endswith(".mmlog") and STAMPED.match(suffix[:-6]):
                pass  # a rotated file's metadata, left until its last writer is gone
            else:
                others.append(name)
        files = [n for _, _, n in sorted(stamped)]
        if os.path.exists(self.path):
            files.append(base)
        return files, others

    def content(self, name):
        """A data file's committed bytes: `mmlog cat` while it has metadata, else the bytes."""
        full = os.path.join(self.dir, name)
        if os.path.exists(full + ".mmlog"):
            cat = subprocess.run([self.t.mmlog_bin, "cat", full], capture_output=True)
            if cat.returncode != 0:
                self.fail("cat-error", f"mmlog cat {name}: exit {cat.returncode}: {cat.stderr.decode(errors='replace')[:300]}")
            return cat.stdout, True
        with open(full, "rb") as f:
            return f.read(), False

    def check_files(self, states, label):
        """Every appended record once, whole, in one file; nothing else but explained holes.
        Returns the records in file order: [(worker, index)]."""
        files, others = self.files_in_order()
        if others:
            self.notes.append(f"{label}: other files in the log's directory: {others}")
        seen = {}
        order = []
        nul_runs = []
        torn = []
        for name in files:
            data, via_cat = self.content(name)
            pos, n = 0, len(data)
            while pos < n:
                if data[pos] == 0:
                    end = pos
                    while end < n and data[end] == 0:
                        end += 1
                    nul_runs.append((name, pos, end - pos, via_cat))
                    pos = end
                    continue
                newline = data.find(b"\n", pos)
                nul = data.find(b"\0", pos)
                stop = n if newline < 0 else newline
                if 0 <= nul < stop:
                    torn.append((name, pos, data[pos:nul], "followed by NUL bytes"))
                    pos = nul
                    continue
                line = data[pos:stop]
                if newline >= 0 and (line == b"" or line.endswith(b" ")):
                    # A hole MMLog filled when it finished a rotated file (or when its hole table
                    # was full): spaces, after what the dead writer had copied, and a newline
                    # (a hole of one byte, e.g. a straddler's part below a void point, is the newline).
                    # Counted as a NUL run would be: it must be a killed or failed append's.
                    nul_runs.append((name, pos, len(line) + 1, via_cat))
                    pos = stop + 1
                    continue
                m = LINE.match(line)
                worker, index = (int(m.group(1)), int(m.group(2))) if m else (None, None)
                w = self.writer_of.get(worker)
                if newline < 0:
                    torn.append((name, pos, line, "unterminated at the end of the file"))
                elif not m or not w or len(line) + 1 != w.spec["size"]:
                    torn.append((name, pos, line, "not a whole line of its writer" if m else "malformed"))
                else:
                    seen.setdefault((worker, index), []).append((name, pos))
                    order.append((worker, index))
                pos = stop + 1
        self.records += len(order)
        self.where = {key: places[0] for key, places in seen.items()}
        for name, pos, line, why in torn[:20]:
            self.fail("torn-in-file", f"{label}: {name} offset {pos}: {len(line)} B {why}: {line[:70]!r}")
        if len(torn) > 20:
            self.fail("torn-in-file", f"{label}: {len(torn) - 20} more torn pieces")
        # Records: appended ones exactly once, in flight at a kill at most once, others never.
        problems = {"lost": [], "duplicate": [], "failed-but-present": [], "never-appended-but-present": []}
        for key, state in states.items():
            count = len(seen.get(key, []))
            if state == ACK_APPENDED and count == 0:
                problems["lost"].append(key)
            elif count > 1:
                problems["duplicate"].append(key)
            elif state == ACK_FAILED and count:
                problems["failed-but-present"].append(key)
        for key in seen:
            if key not in states:
                problems["never-appended-but-present"].append(key)
        self.lost = set(problems["lost"])
        for kind, keys in problems.items():
            if keys:
                keys.sort()
                where = "; ".join(f"w{w} r{i}" + (f" at {seen[(w, i)]}" if (w, i) in seen else "") for w, i in keys[:6])
                self.fail(kind, f"{label}: {len(keys)} record(s): {where}")
        # Each worker's records in order across the files.
        last = {}
        disorder = []
        for position, (worker, index) in enumerate(order):
            if worker in last and index <= last[worker]:
                disorder.append((worker, last[worker], index))
            last[worker] = index
        if disorder:
            self.fail("out-of-order", f"{label}: {len(disorder)} record(s) after a later one of their worker: {disorder[:5]}")
        # NUL runs (and blank-filled holes): records killed in flight or failed (each at most its
        # size), nothing else.
        candidates = sorted(self.writer_of[w].spec["size"] for (w, i), s in states.items()
                            if s in (ACK_APPENDING, ACK_FAILED) and (w, i) not in seen)
        unexplained = []
        sizes = {name: os.path.getsize(os.path.join(self.dir, name)) for name in files}
        for name, pos, length, via_cat in nul_runs:
            # One hole, or adjacent ones merged into one run: the smallest candidate that covers
            # it, else the largest ones until they do.
            fit = next((k for k, size in enumerate(candidates) if size >= length), None)
            if fit is not None:
                candidates.pop(fit)
                continue
            total = 0
            while candidates and total < length:
                total += candidates.pop()
            if total < length:
                unexplained.append((name, pos, length, via_cat))
        if nul_runs:
            self.say(f"{label}: NUL runs {[(n, p, l) for n, p, l, _ in nul_runs[:20]]}")
        for name, pos, length, via_cat in unexplained[:10]:
            to_end = f" (to the end of the {sizes[name]}-byte file)" if not via_cat and pos + length == sizes[name] else ""
            self.fail("nul-in-file", f"{label}: {name} offset {pos}: {length} NUL bytes{to_end}"
                      f"{' in mmlog cat' if via_cat else ''} that no killed or failed append explains")
        self.say(f"{label}: {len(files)} file(s), {len(order)} records, {len(nul_runs)} NUL run(s), {len(torn)} torn")
        self.files = files
        return order

    def catch_up_readers(self, order):
        """Waits until each live reader has printed the last record, or printed nothing for 10 s."""
        last = order[-1] if order else None
        for number, incarnation, child, _ in self.readers:
            grew, size_seen = time.monotonic(), -1
            if not child.running():
                if not child.killed_by_us:
                    self.fail("reader-exited", f"reader {number}.{incarnation} (pid {child.pid}) {child.how_it_ended()}: {child.stderr_text()[:300]}")
                continue
            while time.monotonic() < grew + 10:
                with open(child.out_path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    if size != size_seen:
                        grew, size_seen = time.monotonic(), size
                    f.seek(max(0, size - 4096))
                    tail = f.read().split(b"\n")
                lastline = tail[-2] if len(tail) >= 2 else b""
                m = LINE.match(lastline)
                if last is None or (m and (int(m.group(1)), int(m.group(2))) == last):
                    break
                time.sleep(0.1)
            if last is not None and time.monotonic() >= grew + 10:
                child.stuck = child.stack()
            child.signal(signal.SIGTERM)
            child.proc.wait()

    def check_reader(self, number, incarnation, child, lines, order):
        """A reader's lines are records in file order, consecutive, each once, whole; the last
        incarnation reaches the end."""
        name = f"reader {number}.{incarnation} (pid {child.pid}, -n {lines}, {child.how_it_ended()})"
        with open(child.out_path, "rb") as f:
            data = f.read()
        if b"\0" in data:
            nuls, first = data.count(0), data.index(0)
            self.fail("nul-in-reader", f"{name}: {nuls} NUL byte(s), first at {first}")
        position = {key: p for p, key in enumerate(order)}
        pieces = data.split(b"\n")
        unterminated = pieces.pop()
        previous = None
        offset = 0
        reported = 0
        lost_seen = []
        torn_before = 0
        for line in pieces:
            m = LINE.match(line)
            key = (int(m.group(1)), int(m.group(2))) if m else None
            if key in self.lost:   # appended, printed here, and in no file now: reported as lost
                lost_seen.append((key, previous))
                offset += len(line) + 1
                continue
            w = self.writer_of.get(key[0]) if key else None
            problem = None
            if not m or not w or len(line) + 1 != w.spec["size"]:
                problem = ("torn-in-reader", f"{len(line)} B line, not a whole record: {line[:70]!r}"
                           f"{' then ' + repr(line[-20:]) if len(line) > 70 else ''}")
            elif key not in position:
                problem = ("reader-extra", f"w{key[0]} r{key[1]} is in no file")
            elif previous is not None and position[key] != previous + 1:
                p = position[key]
                if p <= previous:
                    problem = ("reader-duplicate" if p == previous else "reader-rewind",
                               f"w{key[0]} r{key[1]} (record {p} in file order) after record {previous} {order[previous]}")
                else:
                    skipped = order[previous + 1:p]
                    problem = ("reader-missed", f"{p - previous - 1} record(s) skipped after record {previous} "
                               f"{self.at(order[previous])}: from {self.at(skipped[0])} to {self.at(skipped[-1])}; "
                               f"then {self.at(key)}: {self.how_skipped(order[previous], skipped, key, torn_before)}")
            torn_before = len(line) + 1 if problem is not None and problem[0] == "torn-in-reader" else 0
            if problem:
                reported += 1
                if reported <= 5:
                    self.fail(problem[0], f"{name} byte {offset}: {problem[1]}")
            if key in position:
                previous = position[key]
            offset += len(line) + 1
        if lost_seen:
            (first, before), (last, _) = lost_seen[0], lost_seen[-1]
            self.notes.append(f"{name} printed {len(lost_seen)} of the lost records (committed, then gone), "
                              f"w{first[0]} r{first[1]} .. w{last[0]} r{last[1]}, right after "
                              f"{self.at(order[before]) if before is not None else 'its start'}")
        if unterminated:
            if child.killed_by_us:
                self.say(f"{name}: its last write was cut by our SIGKILL ({len(unterminated)} B)")
            else:
                self.fail("torn-in-reader", f"{name}: ends in {len(unterminated)} B without a newline: {unterminated[:70]!r}")
        last_incarnation = max(i for n, i, _, _ in self.readers if n == number)
        if incarnation == last_incarnation and not child.killed_by_us and order and previous != len(order) - 1 \
                and not os.path.exists(self.path):
            self.notes.append(f"{name}: no log at {os.path.basename(self.path)} at the end (its successor was never "
                              f"created), so tail -F waits for it to appear: {child.stuck}")
        elif incarnation == last_incarnation and not child.killed_by_us and order and previous is None:
            # Nothing printed: with -n 0 it may have started after the last record; where it
            # began cannot be told, so it is not called behind.
            self.notes.append(f"{name} printed nothing; its stack when stopped: {child.stuck}")
        elif incarnation == last_incarnation and not child.killed_by_us and order and previous != len(order) - 1:
            missing = len(order) - 1 - (previous if previous is not None else -1)
            file, start = self.where[order[previous]]
            end = start + self.writer_of[order[previous][0]].spec["size"]
            with open(os.path.join(self.dir, file), "rb") as f:
                rest = f.read()[end:]
            nuls = len(rest) - len(rest.lstrip(bytes(1)))
            after = ("the end of the file" if not rest else
                     f"{nuls} NUL byte(s) then {len(rest) - nuls} more" if nuls else f"{len(rest)} more bytes")
            self.fail("reader-behind", f"{name}: printed nothing for 10 s, {missing} record(s) short of the end; "
                      f"last printed {self.at(order[previous])}, which ends at @{end}, followed by {after}; "
                      f"last record {self.at(order[-1])}; its stack: {child.stuck}")

    def how_skipped(self, before, skipped, after, torn_before):
        """What a reader's skip looks like, in words: which files it left early or passed whole."""
        files = self.files
        before_file, first = self.where[before][0], self.where[skipped[0]]
        resumed = self.where.get(after, ("?", -1))
        words = []
        if torn_before:
            # The torn line is the tail of the record the reader went on inside: the last one it
            # skipped before the record it resumed at.
            tail_of = skipped[-1]
            name, start = self.where[tail_of]
            cut = start + self.writer_of[tail_of[0]].spec["size"] - torn_before
            if cut < start:
                return (f"a torn line of {torn_before} B first, longer than the last record it skipped "
                        f"(w{tail_of[0]} r{tail_of[1]} at {name} @{start}): see the files' own torn pieces")
            rotating = sorted({w.number for w in self.writers if w.spec.get("rotate_at") == cut}) if hasattr(self, "writers") else []
            boundary = (f"a multiple of the chunk size {self.chunk_size}" if cut % self.chunk_size == 0
                        else f"the rotate-at size of writer(s) {rotating}" if rotating else "not a chunk boundary")
            words.append(f"it printed the last {torn_before} B of w{tail_of[0]} r{tail_of[1]} as a line, so it went on "
                         f"from {name} @{cut} ({boundary}), past bytes that held no record yet when it read them "
                         f"(taken as zeros, or as a hole)")
        if resumed[0] != before_file:
            if first[0] == before_file:
                words.append(f"left {before_file} before its end (@{first[1]}, size {os.path.getsize(os.path.join(self.dir, before_file))})")
            if before_file in files and resumed[0] in files:
                passed = files[files.index(before_file) + 1:files.index(resumed[0])]
                passed = [f for f in passed if any(self.where[k][0] == f for k in skipped)]
                if passed:
                    words.append(f"passed {len(passed)} whole file(s): {', '.join(passed[:3])}")
        else:
            words.append(f"a jump within {before_file}")
        return "; ".join(words)

    def at(self, key):
        name, offset = self.where.get(key, ("?", -1))
        return f"w{key[0]} r{key[1]} ({name} @{offset})"

    def check_usable(self, states):
        """After the faults: stat, a fresh append, recover, and the files checked again."""
        if not os.path.exists(self.path):
            self.notes.append("no log at the path after the faults (a rotation's successor never created); the fresh append makes one")
        else:
            self.stat("before the fresh append")
        spec = {"threads": 1, "size": 100, "rate": 0, "ops": 50, "sync_every": 1, "rotate_at": 0}
        w = self.start_writer(spec)
        try:
            w.child.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("append-after-faults", f"the fresh append hangs: {w.child.stack()}")
            w.child.kill()
        if w.child.proc.returncode != 0:
            self.fail("append-after-faults", f"the fresh append: {w.child.how_it_ended()}: {w.child.crash() or w.child.stderr_text()[:300]}")
        self.stat("after the fresh append")
        recover = subprocess.run([self.t.mmlog_bin, "recover", "--json", self.path], capture_output=True, text=True)
        if recover.returncode != 0:
            self.fail("recover-error", f"mmlog recover: exit {recover.returncode}: {recover.stderr.strip()[:300]}")
        else:
            self.say("recover: " + " ".join(recover.stdout.split()))
        records = self.records
        self.check_files(self.read_acks(report=False), "after a fresh append and recover")
        self.records = records

    def stat(self, when):
        stat = subprocess.run([self.t.mmlog_bin, "stat", "--json", self.path], capture_output=True, text=True)
        if stat.returncode != 0:
            self.fail("stat-error", f"mmlog stat {when}: exit {stat.returncode}: {stat.stderr.strip()[:300]}")
        else:
            self.say(f"stat {when}: " + " ".join(f"{k}={v}" for k, v in json.loads(stat.stdout).items()
                                                 if k in ("cursor", "committed", "holes", "deadWriters", "rotations", "lastCloseClean")))

    # --- keeping or removing the round ---------------------------------------------------------

    def stop_everything(self):
        for child in Child.everyone:
            child.signal(signal.SIGCONT)
            child.kill()
        self.free_disk()

    def summary(self):
        faults = ", ".join(f"{k} {v}" for k, v in self.faults.items() if v)
        return (f"round {self.number} (seed {self.seed}): {len(self.writers)} writers, "
                f"{len(self.readers)} reader runs, {len(self.files)} files, {self.records} records; "
                f"faults: {faults or 'none'}")


class Torture:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
        self.writer_bin = os.path.join(args.bin, "mmlog-writer")
        self.mmlog_bin = os.path.join(args.bin, "mmlog")
        self.shim = args.shim
        self.workdir = tempfile.mkdtemp(prefix="torture.", dir=args.dir)
        self.fsdir = os.path.join(self.workdir, "fs")
        os.makedirs(self.fsdir)
        self.tmpfs = False
        self.fs_bytes = 512 << 20
        self.keep = False

    def mount(self):
        if os.geteuid() != 0 or self.args.no_tmpfs:
            print("torture: not root (or --no-tmpfs): no tmpfs of its own, so no full-disk spells", flush=True)
            return
        size = self.args.tmpfs_mib
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m,mode=0755", "tmpfs", self.fsdir], check=True)
        self.tmpfs = True
        self.fs_bytes = size << 20

    def unmount(self):
        if self.tmpfs:
            subprocess.run(["umount", "-l", self.fsdir])
            self.tmpfs = False

    def run(self):
        args = self.args
        budget = args.seconds if args.seconds else args.minutes * 60
        what = f"round {args.round} only" if args.round is not None else f"{budget:.0f} s"
        print(f"torture: seed {self.seed}; {what}; work directory {self.workdir}", flush=True)
        self.mount()
        started = time.monotonic()
        totals = {"rounds": 0, "records": 0, "failures": 0}
        faults = {k: 0 for k in FAULT_KINDS}
        kinds = {}
        number = args.round if args.round is not None else 0
        while True:
            left = budget - (time.monotonic() - started)
            if args.round is None and totals["rounds"] and left < 8:
                break
            seconds = random.Random(f"{self.seed}/{number}/length").uniform(8, args.round_seconds)
            if args.round is None:
                seconds = round(min(seconds, max(left - 5, 5)), 1)
            if args.length:
                seconds = args.length
            rnd = Round(self, number, seconds)
            try:
                rnd.run()
            finally:
                rnd.stop_everything()
                Child.everyone = []
            totals["rounds"] += 1
            totals["records"] += rnd.records
            for k, v in rnd.faults.items():
                faults[k] += v
            with open(os.path.join(rnd.ctl, "round.log"), "w") as f:
                f.write("\n".join(rnd.log_lines) + "\n")
            status = "ok" if not rnd.failures else f"{len(rnd.failures)} FAILURE(S)"
            print(f"torture: {rnd.summary()}: {status}", flush=True)
            for note in rnd.notes[:8]:
                print(f"  note: {note}", flush=True)
            if rnd.failures:
                totals["failures"] += len(rnd.failures)
                for kind, text in rnd.failures:
                    kinds[kind] = kinds.get(kind, 0) + 1
                    print(f"  FAIL {kind}: {text}", flush=True)
                kept = os.path.join(rnd.ctl, "files")
                subprocess.run(["cp", "-a", "--sparse=always", rnd.dir, kept])
                self.keep = True
                print(f"  kept: {rnd.ctl} (round.log, writer/reader outputs, acks; the log's files in files/)", flush=True)
                print(f"  replay: scripts/torture.sh --seed {self.seed} --round {number} --length {seconds}"
                      + (f" --faults {args.faults}" if args.faults else "") + (f" --tmpfs-mib {args.tmpfs_mib}" if args.tmpfs_mib != 96 else ""), flush=True)
            else:
                shutil.rmtree(rnd.ctl, ignore_errors=True)
            shutil.rmtree(rnd.dir, ignore_errors=True)
            print(f"torture: so far {totals['rounds']} rounds, {totals['records']} records, "
                  f"{totals['failures']} failures; faults: " + ", ".join(f"{k} {v}" for k, v in faults.items()), flush=True)
            number += 1
            if args.round is not None:
                break
        if kinds:
            print("torture: failures by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())), flush=True)
            print(f"torture: seed {self.seed}; kept {self.workdir}", flush=True)
        print(f"torture: {totals['rounds']} rounds, {totals['records']} records, {totals['failures']} failures", flush=True)
        return 1 if totals["failures"] else 0

    def cleanup(self):
        for child in Child.everyone:
            child.signal(signal.SIGCONT)
            child.kill()
        self.unmount()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(prog="torture.sh", add_help=False)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--round", type=int)
    parser.add_argument("--round-seconds", type=float, default=25)
    parser.add_argument("--length", type=float)
    parser.add_argument("--faults")
    parser.add_argument("--tmpfs-mib", type=int, default=96)
    parser.add_argument("--no-tmpfs", action="store_true")
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--bin", required=True)
    parser.add_argument("--shim", required=True)
    args = parser.parse_args()
    if not 64 <= args.tmpfs_mib <= 1024:
        parser.error("--tmpfs-mib: 64 to 1024")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    torture = Torture(args)
    code = 2
    try:
        code = torture.run()
    except Stop as stop:
        print(f"torture: stopped by {stop}; seed {torture.seed}", flush=True)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        torture.cleanup()
        if torture.keep:
            print(f"torture: kept {torture.workdir}", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
