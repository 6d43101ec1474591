#!/usr/bin/env bash
# mmlog and write(O_APPEND), 4 processes, each run started after the machine sat idle for
# --idle seconds, with and without the harness's --warm-memory step.
#   scripts/memory_regimes.sh [--reps 5] [--idle 6] [--sizes "128 4095"] [--out results]
# Why: a VM that reports free memory to its host (free page reporting) lets the host discard
# it; the first touch of a discarded page then faults in the host. Idle seconds let every
# freed page be reported, so --no-warm-memory runs see the worst case every time, and
# --warm-memory runs show what the same run costs on memory the host backs. Writes
# results/memory-regimes.md and .csv (replaced).
set -euo pipefail
command="scripts/memory_regimes.sh$(printf ' %q' "$@")"
source "$(dirname "$0")/lib/common.sh"
out="$ROOT/results"
reps=5
idle=6
sizes=(128 4095)
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps="$2"; shift 2 ;;
        --idle) idle="$2"; shift 2 ;;
        --sizes) read -r -a sizes <<<"$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "memory_regimes.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
prepare_measurement "$out"   # builds before the clock starts
csv="$out/memory-regimes.csv"
md="$out/memory-regimes.md"
rm -f "$csv"   # appendbench appends: a fixed name starts empty

reporting=/sys/module/page_reporting/parameters
if [ -r "$reporting/page_reporting_order" ]; then
    report_state="free page reporting on, order $(cat "$reporting/page_reporting_order") ($(( 4 << $(cat "$reporting/page_reporting_order") )) KiB blocks)"
    reported_before=$(cat "$reporting/reported_kib" 2>/dev/null || echo 0)
else
    report_state="no free page reporting parameters in /sys/module/page_reporting"
    reported_before=0
fi

configs=("mmlog --warm-memory" "mmlog --no-warm-memory" "write --warm-memory" "write --no-warm-memory")
total=$(( reps * ${#sizes[@]} * ${#configs[@]} ))
n=0
for rep in $(seq 1 "$reps"); do
    for size in "${sizes[@]}"; do
        ops=100000
        [ "$size" -ge 1024 ] && ops=10000
        for config in "${configs[@]}"; do
            read -r backend warm <<<"$config"
            n=$(( n + 1 ))
            echo "[$n/$total] size=$size $backend $warm (idle ${idle}s first)" >&2
            sleep "$idle"
            "$ROOT/scripts/appendbench" --backends "$backend" --procs 4 --ops "$ops" --size "$size" \
                "$warm" --csv "$csv" --quiet >/dev/null
        done
    done
done
reported_after=$(cat "$reporting/reported_kib" 2>/dev/null || echo 0)

python3 - "$csv" "$md" "$command" "$idle" "$reps" "$report_state" $(( reported_after - reported_before )) <<'PY'
import csv, statistics, sys, os, subprocess
path, md, command, idle, reps, state, reported = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
def times(size, backend, warm):
    return [float(r["total_ms"]) for r in rows
            if r["size"] == size and r["backend"] == backend and r["warm_memory"] == warm and r["verified"] == "yes"]
first = rows[0]
fs = subprocess.run(["df", "-T", "/tmp"], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
with open(md, "w") as f:
    f.write("# Memory regimes: mmlog and write after the machine sat idle\n\n")
    f.write(f"```\n{command}\n```\n\n")
    f.write(f"Machine: {os.cpu_count()} cores, kernel {first['kernel']}, {fs} at /tmp, {state}; "
            f"{int(reported) // 1024} MiB reported to the host during the script. Date: {first['date']}.\n")
    f.write(f"Each run: `appendbench --backends B --procs 4 --size S` after {idle} s idle; {reps} runs per cell, "
            "all verified; times are medians (runs in brackets). Ratio: write's median / mmlog's median.\n\n")
    f.write("| size | memory | mmlog ms | write ms | mmlog / write |\n|---|---|---|---|---|\n")
    for size in sorted({r["size"] for r in rows}, key=int):
        for warm, label in (("true", "--warm-memory"), ("false", "--no-warm-memory")):
            m, w = times(size, "mmlog", warm), times(size, "write", warm)
            if not m or not w:
                continue
            mm, wm = statistics.median(m), statistics.median(w)
            f.write(f"| {size} B | {label} | {mm:.0f} ({', '.join(f'{x:.0f}' for x in m)}) | "
                    f"{wm:.0f} ({', '.join(f'{x:.0f}' for x in w)}) | {wm / mm:.2f}x |\n")
print(open(md).read())
PY
echo "wrote $md and $csv" >&2
