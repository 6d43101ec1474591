#!/usr/bin/env bash
# MMLog's knobs, swept: chunk size x ring capacity, prefaulting and huge page advice, each
# measured against write(O_APPEND) side by side, 4 processes, at 1 B, 128 B and 4095 B.
#   scripts/sweep_mmlog.sh [--rounds 3] [--runs 5] [--procs 4] [--out results]
#                          [--set "CHUNK MAX [FLAGS]"]... [--sizes "1 128 4095"]
# Every setting runs once per round (rounds interleave the settings, so slow spells of the
# machine spread over all of them); each invocation reports the median of --runs runs. The
# summary is the median over rounds of mmlog's ratio to write, in results/mmlog-sweep.md, the
# rows in results/mmlog-sweep.csv (both replaced).
set -euo pipefail
command="scripts/sweep_mmlog.sh$(printf ' %q' "$@")"
source "$(dirname "$0")/lib/common.sh"
out="$ROOT/results"
rounds=3
runs=5
procs=4
custom=()
sizes=(1 128 4095)
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --procs) procs="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --set) custom+=("$2"); shift 2 ;;
        --sizes) read -r -a sizes <<<"$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "sweep_mmlog.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
prepare_measurement "$out"   # builds before the clock starts
csv="$out/mmlog-sweep.csv"
md="$out/mmlog-sweep.md"
rm -f "$csv"   # appendbench appends: a fixed name starts empty

MiB=$((1 << 20))
# chunk size, max chunks, then extra flags. The first is the default.
settings=(
    "$((4 * MiB)) 4"
    "$((2 * MiB)) 4"
    "$((8 * MiB)) 4"
    "$((16 * MiB)) 4"
    "$((8 * MiB)) 2"
    "$((8 * MiB)) 8"
    "$((32 * MiB)) 2"
    "$((4 * MiB)) 4 --prefault read"
    "$((4 * MiB)) 4 --prefault none"
    "$((4 * MiB)) 4 --no-huge-pages"
    "$((64 * 1024)) 4"
)
[ ${#custom[@]} -gt 0 ] && settings=("${custom[@]}")
total=$(( rounds * ${#settings[@]} * ${#sizes[@]} ))
n=0
started=$(date +%s)
for round in $(seq 1 "$rounds"); do
    for setting in "${settings[@]}"; do
        read -r chunk max extra <<<"$setting"
        for size in "${sizes[@]}"; do
            n=$(( n + 1 ))
            ops=100000
            [ "$size" -ge 4000 ] && ops=10000
            echo "[$n/$total] round $round: --chunk-size $chunk --max-chunks $max ${extra:-} --size $size ($(( $(date +%s) - started ))s so far)" >&2
            # shellcheck disable=SC2086
            "$ROOT/.build/release/appendbench" --procs "$procs" --ops $(( ops * 4 / procs )) --size "$size" \
                --backends mmlog,write --runs "$runs" --chunk-size "$chunk" --max-chunks "$max" ${extra:-} \
                --csv "$csv" --quiet "${hold[@]}" >/dev/null
        done
    done
done

python3 - "$csv" "$md" "$rounds" "$runs" "$procs" "$command" <<'EOF'
import csv, statistics, sys
path, md, rounds, runs, procs, command = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rows = list(csv.DictReader(open(path)))
# One invocation = the rows sharing a date; its mmlog ratio is the median run's speedup.
by_inv = {}
for r in rows:
    by_inv.setdefault((r["date"], r["size"]), []).append(r)
ratios = {}
for (date, size), rs in by_inv.items():
    m = [r for r in rs if r["backend"] == "mmlog"]
    if not m or any(r["verified"] != "yes" for r in rs if r["backend"] in ("mmlog", "write")):
        sys.exit(f"{path}: an invocation at {date} did not verify")
    median_ms = m[0]["median_total_ms"]
    run = min(m, key=lambda r: abs(float(r["total_ms"]) - float(median_ms)))
    knob = (int(run["chunk_size"]), int(run["max_chunks"]), run["prefault"], run["huge_pages"], run.get("prefetch") or "false")
    ratios.setdefault(knob, {}).setdefault(int(size), []).append(float(run["speedup_vs_write"]))
sizes = sorted({s for k in ratios.values() for s in k})
k0 = rows[0]
with open(md, "w") as f:
    f.write("# MMLog knobs, swept\n\n")
    f.write(f"`{command}`, {k0['date'][:10]}, kernel {k0['kernel']}, "
            f"{k0['filesystem']}, 2 cores. {procs} processes; 400,000 records below 4000 B, 40,000 from 4000 B up.\n")
    f.write(f"Each cell: mmlog's speedup over write(O_APPEND) measured in the same invocation (median of {runs} runs), "
            f"then the median over {rounds} rounds (min-max in brackets). Raw rows: `{path.split('/')[-1]}`.\n\n")
    f.write("| chunk size | max chunks | mapped per process | prefault | huge pages | prefetch | " + " | ".join(f"{s} B" for s in sizes) + " |\n")
    f.write("|---|---|---|---|---|---|" + "---|" * len(sizes) + "\n")
    def mib(b): return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB"
    for knob in ratios:  # in the order the sweep ran them
        chunk, maxc, pre, huge, prefetch = knob
        cells = []
        for s in sizes:
            v = ratios[knob].get(s, [])
            cells.append(f"{statistics.median(v):.2f}x ({min(v):.2f}-{max(v):.2f})" if v else "")
        f.write(f"| {mib(chunk)} | {maxc} | {mib(chunk * maxc)} | {pre} | {huge} | {prefetch} | " + " | ".join(cells) + " |\n")
print(open(md).read())
EOF
echo "wrote $csv and $md ($(( $(date +%s) - started ))s)" >&2
