#!/usr/bin/env bash
# The full matrix: record sizes x process counts x every backend, into one CSV.
#   scripts/run_all.sh [--quick] [--out DIR] [--runs N]
# Each (size, procs) pair is one appendbench invocation with every backend, so the
# ratios in a row group were measured side by side. Ops are chosen so that each cell
# moves about the same volume (and the slowest backends still finish in seconds).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
out="$ROOT/results"
runs=1
sizes=(1 16 64 128 512 1024 4095 4096 16384 65536)
procs_list=(1 2 4 8)
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) sizes=(1 128 4095 65536); procs_list=(1 4); shift ;;
        --out) out="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run_all.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
csv="$out/matrix-$stamp.csv"
"$ROOT/scripts/appendbench" --help >/dev/null   # build before the clock starts

backends=9   # Backends.all, floor and null included
total=$(( ${#sizes[@]} * ${#procs_list[@]} * backends ))
cell=0
failed=0
started=$(date +%s)
for size in "${sizes[@]}"; do
    for procs in "${procs_list[@]}"; do
        # About 64 MiB of payload per cell, between 2,000 and 200,000 records in all.
        records=$(( 64 * 1024 * 1024 / size ))
        (( records > 200000 )) && records=200000
        (( records < 2000 )) && records=2000
        ops=$(( records / procs ))
        first=$(( cell + 1 ))
        cell=$(( cell + backends ))
        echo "[$first-$cell/$total] size=$size procs=$procs ops=$ops (all backends), $(( $(date +%s) - started ))s so far" >&2
        if ! "$ROOT/.build/release/appendbench" --procs "$procs" --ops "$ops" --size "$size" --runs "$runs" \
                --csv "$csv" --quiet > "$out/.last-table.txt"; then
            failed=$(( failed + 1 ))
            echo "  some backend failed or did not verify:" >&2
            grep -E "FAILED|^- " "$out/.last-table.txt" >&2 || true
        fi
    done
done
rm -f "$out/.last-table.txt"
echo "wrote $csv ($cell cells in $(( $(date +%s) - started ))s, $failed invocations with failures)" >&2
[ "$failed" -eq 0 ]
