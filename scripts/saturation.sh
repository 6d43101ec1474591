#!/usr/bin/env bash
# The experiment the article left undone: append throughput over time as the dirty page
# cache reaches the kernel's limits and writeback starts to throttle the writers.
#   scripts/saturation.sh [--gib 2] [--dirty-mib 256] [--backends mmlog,write,...] [--out DIR]
# Each backend writes --gib GiB (4 KiB records, 4 processes) with --timeline 100; the series
# goes to DIR/saturation.csv (replaced) and is plotted with the limits marked (DIR/plots/timeline.png).
# --dirty-mib M (as root) sets vm.dirty_bytes = M MiB and vm.dirty_background_bytes = M/2
# for the run and restores the old values on exit, so the limits are reached within the
# volume; --dirty-mib 0 keeps the machine's settings (the volume may then stay under them).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
gib=2
dirty_mib=256
backends="mmlog,write,writev,fwrite,aio,uring,direct"
out="$ROOT/results"
while [ $# -gt 0 ]; do
    case "$1" in
        --gib) gib="$2"; shift 2 ;;
        --dirty-mib) dirty_mib="$2"; shift 2 ;;
        --backends) backends="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "saturation.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
mkdir -p "$out"
vm=/proc/sys/vm
if [ "$dirty_mib" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "saturation.sh: --dirty-mib needs root; run as root or pass --dirty-mib 0" >&2
        exit 1
    fi
    saved="$(cat $vm/dirty_bytes) $(cat $vm/dirty_background_bytes) $(cat $vm/dirty_ratio) $(cat $vm/dirty_background_ratio)"
    restore() {
        set -- $saved
        # Writing a *_bytes value zeroes its ratio and vice versa: restore whichever was in force.
        if [ "$1" -gt 0 ]; then echo "$1" > $vm/dirty_bytes; else echo "$3" > $vm/dirty_ratio; fi
        if [ "$2" -gt 0 ]; then echo "$2" > $vm/dirty_background_bytes; else echo "$4" > $vm/dirty_background_ratio; fi
        echo "restored vm.dirty_* to: $(cat $vm/dirty_bytes) bytes / $(cat $vm/dirty_ratio)%, background $(cat $vm/dirty_background_bytes) bytes / $(cat $vm/dirty_background_ratio)%" >&2
    }
    trap restore EXIT
    echo $(( dirty_mib * 1024 * 1024 )) > $vm/dirty_bytes
    echo $(( dirty_mib * 1024 * 1024 / 2 )) > $vm/dirty_background_bytes
fi
echo "dirty limits for the run: dirty_bytes=$(cat $vm/dirty_bytes) dirty_background_bytes=$(cat $vm/dirty_background_bytes)" \
     "dirty_ratio=$(cat $vm/dirty_ratio)% dirty_background_ratio=$(cat $vm/dirty_background_ratio)%" >&2

csv="$out/saturation.csv"
rm -f "$csv"   # every backend's run appends its series to it
procs=4
size=4096
ops=$(( gib * 1024 * 1024 * 1024 / size / procs ))
"$ROOT/scripts/appendbench" --help >/dev/null   # build first
IFS=, read -ra keys <<<"$backends"
for key in "${keys[@]}"; do
    echo "[$key] $procs processes x $ops records of $size B ($gib GiB), timeline every 100 ms" >&2
    sync   # start each backend with the previous one's dirty pages written back
    "$ROOT/.build/release/appendbench" --procs $procs --ops $ops --size $size --backends "$key" \
        --timeline 100 --timeline-csv "$csv" --quiet | grep -E "^\| |^- " >&2
done
echo "wrote $csv" >&2
python3 "$ROOT/scripts/plot.py" "$csv" --out "$out/plots" || echo "(plot skipped: $?)" >&2
