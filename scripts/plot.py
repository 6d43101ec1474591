#!/usr/bin/env python3
"""Draws PNGs from appendbench CSV output.

    scripts/plot.py results/matrix.csv [--out results/plots]

- throughput-procs-N.png: payload GB/s against record size per backend (log-log),
  one figure per process count;
- cpu-per-call-procs-N.png: CPU time (user + system, workers and, for the services, the
  central log service's collector or the journald or syslog-ng daemon) per record against
  record size per backend, one figure per process count;
- speedup.png: mmlog's throughput over write(O_APPEND) across sizes, one line per
  process count (ratios from the same invocation);
- latency.png: p50, p99 and p99.9 per call against record size, where --latency was used;
- timeline.png (from a --timeline CSV, as scripts/saturation.sh writes): throughput over
  time per backend, with the moments each crossed the dirty page limits marked.

Only verified rows are drawn; each point is the median of its runs.

It brings its own matplotlib: when python3 has none, the first run makes a virtual
environment in .build/plot-venv (python3 -m venv, then pip install matplotlib from PyPI;
as root it installs Debian's python3-venv first when venv is missing) and runs itself
there; later runs reuse it.
"""
import argparse
import collections
import csv
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".build", "plot-venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python3")


def say(message):
    print(f"plot.py: {message}", file=sys.stderr, flush=True)


def make_venv():
    """Creates VENV; where Debian split venv out of python3 (no ensurepip), installs python3-venv as root."""
    if subprocess.run([sys.executable, "-m", "venv", VENV], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0:
        return
    subprocess.run(["rm", "-rf", VENV])
    if os.geteuid() != 0 or subprocess.run(["sh", "-c", "command -v apt-get"], stdout=subprocess.DEVNULL).returncode != 0:
        sys.exit(f"plot.py: {sys.executable} -m venv failed; install python3-venv (Debian: sudo apt-get install -y python3-venv)")
    say("python3 -m venv needs Debian's python3-venv: installing it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-q", "python3-venv"], env=env, stdout=sys.stderr).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=sys.stderr, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "python3-venv"], env=env, stdout=sys.stderr, check=True)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)


def bring_matplotlib():
    """Imports matplotlib, or re-runs this script in .build/plot-venv after providing it there."""
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit(f"plot.py: matplotlib is still missing in {VENV}; remove that directory and run again")
    has_it = os.path.exists(VENV_PYTHON) and subprocess.run(
        [VENV_PYTHON, "-c", "import matplotlib"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if not has_it:
        say(f"first use: installing matplotlib into {os.path.relpath(VENV, os.getcwd())} (once; needs PyPI)")
        if not os.path.exists(VENV_PYTHON):
            make_venv()
        install = [VENV_PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"]
        if subprocess.run(install, stdout=sys.stderr).returncode != 0:
            sys.exit(f"plot.py: pip could not install matplotlib into {VENV}")
    os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])


bring_matplotlib()
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(paths):
    rows = []
    for path in paths:
        with open(path, newline="") as handle:
            rows += [row for row in csv.DictReader(handle)]
    return rows


def row_throughput(row):
    """Payload GB/s from the row's records, size and total time (its throughput_gbps column is
    rounded to 4 decimals: 0 for the slowest backends at 1 B); the column in an older CSV."""
    try:
        return int(row["records"]) * int(row["size"]) / (float(row["total_ms"]) * 1e6)
    except (KeyError, ValueError, ZeroDivisionError):
        return float(row["throughput_gbps"]) if row.get("throughput_gbps") else None


def medians(rows, field):
    """{(backend, procs, size): median of `field` (a column, or a function of the row)} over
    verified rows that have it."""
    groups = collections.defaultdict(list)
    for row in rows:
        value = field(row) if callable(field) else (float(row[field]) if row.get(field) else None)
        if row.get("verified") not in ("yes", "n/a") or value is None or value <= 0:
            continue  # unverified, absent, or rounded to zero (cannot sit on a log axis)
        groups[(row["backend"], int(row["procs"]), int(row["size"]))].append(value)
    return {key: statistics.median(values) for key, values in groups.items()}


SERVICES = ("cla", "cla-async", "journald", "syslog")


def style(backends, backend):
    """One color per backend from a 20-color map (the default cycle repeats after 10); the
    services (a process of their own per run) dashed, mmlog thick."""
    colors = plt.get_cmap("tab20").colors
    k = backends.index(backend)
    return {"color": colors[(2 * k) % 20 + (2 * k // 20) % 2],
            "linestyle": "--" if backend in SERVICES else (":" if backend == "null" else "-"),
            "linewidth": 2.5 if backend == "mmlog" else 1.2}


def title_suffix(rows):
    first = rows[0]
    return f"kernel {first['kernel']}, {first['filesystem']}, {first['date'][:10]}"


def plot_throughput(rows, out):
    throughput = medians(rows, row_throughput)
    backends = list(dict.fromkeys(row["backend"] for row in rows))
    written = []
    for procs in sorted({key[1] for key in throughput}):
        figure, axes = plt.subplots(figsize=(8, 5.5))
        for backend in backends:
            points = sorted((size, value) for (b, p, size), value in throughput.items() if b == backend and p == procs)
            if points and backend != "null":
                axes.plot(*zip(*points), marker="o", label=backend, **style(backends, backend))
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel("record size (bytes)")
        axes.set_ylabel("throughput (payload GB/s, 1e9 B/s)")
        axes.set_title(f"Appending from {procs} process{'es' if procs > 1 else ''}\n{title_suffix(rows)}")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        path = os.path.join(out, f"throughput-procs-{procs}.png")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plot_cpu(rows, out):
    """CPU time per record: where write() spends system time and mmlog does not."""
    cpu = medians(rows, "cpu_per_call_us")
    if not cpu:
        return []  # a CSV from before appendbench measured CPU time
    backends = list(dict.fromkeys(row["backend"] for row in rows))
    written = []
    for procs in sorted({key[1] for key in cpu}):
        figure, axes = plt.subplots(figsize=(8, 5.5))
        for backend in backends:
            points = sorted((size, value) for (b, p, size), value in cpu.items() if b == backend and p == procs)
            if points:
                axes.plot(*zip(*points), marker="o", label=backend, **style(backends, backend))
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel("record size (bytes)")
        axes.set_ylabel("CPU time per record (μs, user + system)")
        axes.set_title(f"CPU cost of appending, {procs} process{'es' if procs > 1 else ''} "
                       f"(services: workers + collector or daemon)\n{title_suffix(rows)}")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        path = os.path.join(out, f"cpu-per-call-procs-{procs}.png")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plot_speedup(rows, out):
    speedup = medians(rows, "speedup_vs_write")
    figure, axes = plt.subplots(figsize=(8, 5))
    for procs in sorted({key[1] for key in speedup}):
        points = sorted((size, value) for (b, p, size), value in speedup.items() if b == "mmlog" and p == procs)
        if points:
            axes.plot(*zip(*points), marker="o", label=f"{procs} process{'es' if procs > 1 else ''}")
    axes.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("record size (bytes)")
    axes.set_ylabel("mmlog throughput / write(O_APPEND) throughput")
    axes.set_title(f"mmlog over write(O_APPEND)\n{title_suffix(rows)}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    path = os.path.join(out, "speedup.png")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path]


def plot_latency(rows, out):
    series = [("p50", medians(rows, "p50_us"), "-"), ("p99", medians(rows, "p99_us"), "--"),
              ("p99.9", medians(rows, "p999_us"), ":")]
    p50 = series[0][1]
    if not p50:
        return []
    procs = max(key[1] for key in p50)
    figure, axes = plt.subplots(figsize=(8, 5))
    for backend in dict.fromkeys(row["backend"] for row in rows):
        color = None
        for name, values, style in series:
            points = sorted((size, v) for (b, p, size), v in values.items() if b == backend and p == procs)
            if points:
                line, = axes.plot(*zip(*points), linestyle=style, marker=".", label=f"{backend} {name}", color=color)
                color = line.get_color()
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("record size (bytes)")
    axes.set_ylabel("latency per call (μs)")
    axes.set_title(f"Per-call latency, {procs} processes\n{title_suffix(rows)}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    path = os.path.join(out, "latency.png")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path]


def plot_timeline(rows, out):
    figure, axes = plt.subplots(figsize=(9, 5.5))
    background = throttle = None
    for backend in dict.fromkeys(row["backend"] for row in rows):
        series = [row for row in rows if row["backend"] == backend and row["run"] == "1"]
        if not series:
            continue
        times = [float(row["t_ms"]) / 1e3 for row in series]
        line, = axes.plot(times, [float(row["mb_per_s"]) for row in series], label=backend, linewidth=1.4)
        background = int(series[0]["dirty_background_bytes"])
        throttle = int(series[0]["dirty_throttle_bytes"])
        # Mark when this backend's output passed each limit (dirty pages can be no more than that).
        for limit, style in ((background, ":"), (throttle, "--")):
            crossed = next((t for t, row in zip(times, series) if int(row["cumulative_bytes"]) >= limit), None)
            if crossed is not None:
                axes.axvline(crossed, color=line.get_color(), linestyle=style, linewidth=0.9, alpha=0.8)
    axes.set_xlabel("seconds since the start barrier")
    axes.set_ylabel("throughput (MB/s, all workers)")
    limits = f"dotted: written past dirty_background ({background >> 20} MiB); dashed: past the throttle limit ({throttle >> 20} MiB)"
    axes.set_title(f"Appending past the dirty page limits\n{title_suffix(rows)}\n{limits}", fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    path = os.path.join(out, "timeline.png")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", help="appendbench --csv output")
    parser.add_argument("--out", default=None, help="directory for the PNGs (default: beside the first CSV, plots/)")
    args = parser.parse_args()
    rows = load(args.csv)
    if not rows:
        sys.exit("plot.py: no rows in " + ", ".join(args.csv))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.csv[0])), "plots")
    os.makedirs(out, exist_ok=True)
    if "t_ms" in rows[0]:
        written = plot_timeline(rows, out)
    else:
        written = plot_throughput(rows, out) + plot_cpu(rows, out) + plot_speedup(rows, out) + plot_latency(rows, out)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
