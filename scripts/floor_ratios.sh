#!/usr/bin/env bash
# MMLog's fast path against the floor (a bare fetch-add + memcpy into a mapping prefaulted
# before the clock): for 1 B, 128 B and 4095 B records, 4 processes, --rounds invocations of
# `appendbench --backends mmlog,floor,write --runs 5`; in each, the ratio of mmlog's
# throughput to floor's (floor's median time / mmlog's) and mmlog / write. Writes
# results/floor-ratios.md and .csv (fixed names) with the command lines, date, kernel and
# filesystem. Reporting of free memory to the host is left as it is unless --hold is given
# (the committed-watermark issue measured its baseline without holding it).
#   scripts/floor_ratios.sh [--rounds 3] [--hold] [--out DIR]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
rounds=3
out="$ROOT/results"
hold_wanted=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --hold) hold_wanted=1; shift ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "floor_ratios.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
prepare_measurement "$out"
[ "$hold_wanted" -eq 1 ] || hold=()
md="$out/floor-ratios.md"
csv="$out/floor-ratios.csv"
rm -f "$csv"
commands=()
for round in $(seq 1 "$rounds"); do
    for spec in "1|100000" "128|100000" "4095|10000"; do
        IFS='|' read -r size ops <<<"$spec"
        cmd=(--procs 4 --ops "$ops" --size "$size" --backends mmlog,floor,write --runs 5 --csv "$csv" --quiet "${hold[@]}")
        echo "round $round/$rounds: appendbench ${cmd[*]}" >&2
        commands+=("appendbench ${cmd[*]}")
        "$ROOT/scripts/appendbench" "${cmd[@]}" > /dev/null
    done
done
COMMANDS="$(printf '%s\n' "${commands[@]}" | sort -u)" python3 - "$csv" "$md" "$(date -u +%Y-%m-%dT%H:%MZ)" <<'PY'
import csv, os, statistics, sys
path, md, date = sys.argv[1:]
rows = list(csv.DictReader(open(path, newline="")))
# One invocation = consecutive rows of one size with runs 1..5 of each backend; group by (size, invocation).
groups, last = [], None
for row in rows:
    key = row["size"]
    if last != key or (row["backend"] == "mmlog" and row["run"] == "1"):
        groups.append([])
    groups[-1].append(row)
    last = key
def median_time(group, backend):
    return float(next(r for r in group if r["backend"] == backend)["median_total_ms"])
by_size = {}
for group in groups:
    size = group[0]["size"]
    if any(r["verified"] != "yes" and r["backend"] != "null" for r in group):
        by_size.setdefault(size, []).append(None)
        continue
    m, f, w = (median_time(group, b) for b in ("mmlog", "floor", "write"))
    by_size.setdefault(size, []).append((f / m, w / m, m, f, w))
first = rows[0]
lines = ["# MMLog against the floor", "", f"Date: {date}. Kernel {first['kernel']}, output on {first['filesystem']},"
         f" page reporting: {first['page_reporting']}. 4 processes; each invocation runs mmlog, floor and write() 5 times"
         " interleaved; a cell is medians' ratio within one invocation (floor time / mmlog time: mmlog's throughput as a"
         " fraction of floor's), then the median over invocations.", "", "```", os.environ["COMMANDS"], "```", "",
         "| size | mmlog / floor (median; each invocation) | mmlog vs write() | mmlog, floor, write ms (median invocation) |",
         "|---|---|---|---|"]
for size in sorted(by_size, key=int):
    good = [g for g in by_size[size] if g]
    if not good:
        lines.append(f"| {size} B | failed | | |")
        continue
    ratios = sorted(g[0] for g in good)
    med = statistics.median(ratios)
    mid = sorted(good, key=lambda g: g[0])[len(good) // 2]
    lines.append(f"| {size} B | {med:.2f} ({', '.join(f'{r:.2f}' for r in (g[0] for g in good))}) | "
                 f"{statistics.median(g[1] for g in good):.1f}x | {mid[2]:.1f}, {mid[3]:.1f}, {mid[4]:.1f} |")
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "wrote $md and $csv" >&2
