#!/usr/bin/env bash
# The full matrix: record sizes x process counts x every backend, into DIR/matrix.csv (replaced),
# then the plots (scripts/plot.py, which brings its own matplotlib) into DIR/plots.
#   scripts/run_all.sh [--quick] [--out DIR] [--runs N] [--no-plots]
# --quick: 4 sizes x 1 and 4 processes, into DIR/matrix-quick.csv and DIR/plots-quick (a check
# that it works, not a measurement; git ignores them).
# Each (size, procs) pair is three appendbench invocations: every backend but direct and the
# services, then direct beside write (O_DIRECT is ~100x slower per call), then the services
# (cla, cla-async, journald, syslog: a process of their own per run, 3-100 us a record) beside
# write; the last two get fewer records. Every speedup in the CSV was measured side by side
# with write in the same invocation. journald needs root (its row says so otherwise).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
out="$ROOT/results"
runs=1
sizes=(1 16 64 128 512 1024 4095 4096 16384 65536)
procs_list=(1 2 4 8)
plots=1
quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) sizes=(1 128 4095 65536); procs_list=(1 4); quick=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --no-plots) plots=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
prepare_measurement "$out"   # builds before the clock starts
name=matrix
plot_dir="$out/plots"
[ "$quick" -eq 1 ] && name=matrix-quick && plot_dir="$out/plots-quick"
csv="$out/$name.csv"
rm -f "$csv"   # appendbench appends: a fixed name starts empty

all_backends="mmlog,write,writev,fwrite,aio,uring,floor,null"
# O_DIRECT costs ~100 us a write here: it runs apart, with fewer records, beside its own
# write(O_APPEND) row so its ratio is still measured side by side.
direct_backends="direct,write"
# The services (a collector or daemon per run) likewise, beside write.
service_backends="cla,cla-async,journald,syslog,write"
cells_per_pair=13
total=$(( ${#sizes[@]} * ${#procs_list[@]} * cells_per_pair ))
cell=0
failed=0
started=$(date +%s)

run_cells() {  # procs ops size backends
    local first=$(( cell + 1 ))
    local count=$(( $(tr -cd , <<<"$4" | wc -c) + 1 ))
    [ "$4" = "$all_backends" ] || count=$(( count - 1 ))   # their write row repeats a cell already counted
    cell=$(( cell + count ))
    echo "[$first-$cell/$total] size=$3 procs=$1 ops=$2: $4 ($(( $(date +%s) - started ))s so far)" >&2
    if ! "$ROOT/.build/release/appendbench" --procs "$1" --ops "$2" --size "$3" --runs "$runs" \
            --backends "$4" --csv "$csv" --quiet "${hold[@]}" > "$out/.last-table.txt"; then
        failed=$(( failed + 1 ))
        echo "  some backend failed or did not verify:" >&2
        grep -E "FAILED|^- " "$out/.last-table.txt" >&2 || true
    fi
}

for size in "${sizes[@]}"; do
    for procs in "${procs_list[@]}"; do
        # About 64 MiB of payload per cell, between 4,000 and 200,000 records in all.
        records=$(( 64 * 1024 * 1024 / size ))
        (( records > 200000 )) && records=200000
        (( records < 4000 )) && records=4000
        run_cells "$procs" $(( records / procs )) "$size" "$all_backends"
        direct_records=$(( records < 8000 ? records : 8000 ))
        run_cells "$procs" $(( direct_records / procs )) "$size" "$direct_backends"
        service_records=$(( records < 24000 ? records : 24000 ))
        run_cells "$procs" $(( service_records / procs )) "$size" "$service_backends"
    done
done
rm -f "$out/.last-table.txt"
echo "wrote $csv ($cell cells in $(( $(date +%s) - started ))s, $failed invocations with failures)" >&2
if [ "$plots" -eq 1 ]; then
    echo "drawing the plots into $plot_dir" >&2
    python3 "$ROOT/scripts/plot.py" "$csv" --out "$plot_dir" >&2 || { echo "run_all.sh: plotting failed" >&2; exit 1; }
fi
[ "$failed" -eq 0 ]
