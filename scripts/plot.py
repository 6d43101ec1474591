#!/usr/bin/env python3
"""Draws PNGs from appendbench CSV output.

    scripts/plot.py results/matrix-*.csv [--out results/plots]

- throughput-procs-N.png: payload GB/s against record size per backend (log-log),
  one figure per process count;
- speedup.png: mmlog's throughput over write(O_APPEND) across sizes, one line per
  process count (ratios from the same invocation);
- latency.png: p50 and p99 per call against record size, where --latency was used;
- timeline.png (from a --timeline CSV, as scripts/saturation.sh writes): throughput over
  time per backend, with the moments each crossed the dirty page limits marked.

Only verified rows are drawn; each point is the median of its runs.
"""
import argparse
import collections
import csv
import os
import statistics
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot.py needs matplotlib: pip install matplotlib")


def load(paths):
    rows = []
    for path in paths:
        with open(path, newline="") as handle:
            rows += [row for row in csv.DictReader(handle)]
    return rows


def medians(rows, field):
    """{(backend, procs, size): median of `field`} over verified rows that have it."""
    groups = collections.defaultdict(list)
    for row in rows:
        if row.get("verified") not in ("yes", "n/a") or not row.get(field) or float(row[field]) <= 0:
            continue  # unverified, absent, or rounded to zero (cannot sit on a log axis)
        groups[(row["backend"], int(row["procs"]), int(row["size"]))].append(float(row[field]))
    return {key: statistics.median(values) for key, values in groups.items()}


def title_suffix(rows):
    first = rows[0]
    return f"kernel {first['kernel']}, {first['filesystem']}, {first['date'][:10]}"


def plot_throughput(rows, out):
    throughput = medians(rows, "throughput_gbps")
    backends = list(dict.fromkeys(row["backend"] for row in rows))
    written = []
    for procs in sorted({key[1] for key in throughput}):
        figure, axes = plt.subplots(figsize=(8, 5.5))
        for backend in backends:
            points = sorted((size, value) for (b, p, size), value in throughput.items() if b == backend and p == procs)
            if points and backend != "null":
                axes.plot(*zip(*points), marker="o", label=backend, linewidth=2.5 if backend == "mmlog" else 1.2)
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
    p50, p99 = medians(rows, "p50_us"), medians(rows, "p99_us")
    if not p50:
        return []
    procs = max(key[1] for key in p50)
    figure, axes = plt.subplots(figsize=(8, 5))
    for backend in dict.fromkeys(row["backend"] for row in rows):
        for values, style in ((p50, "-"), (p99, ":")):
            points = sorted((size, v) for (b, p, size), v in values.items() if b == backend and p == procs)
            if points:
                label = f"{backend} {'p50' if values is p50 else 'p99'}"
                axes.plot(*zip(*points), linestyle=style, marker=".", label=label)
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
        written = plot_throughput(rows, out) + plot_speedup(rows, out) + plot_latency(rows, out)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
