#!/usr/bin/env bash
# Durable appends: every record made durable before the next (--fsync-every 1) at 128 B, for
# 1, 4, 8 and 16 processes: write() + fdatasync per record, mmlog + sync() per record (group
# commit across the processes), and the article's acknowledged central log service (its
# collector fdatasyncs after every record). One invocation per process count, backends
# interleaved, median of --runs; the mmlog / write ratio comes from the same invocation.
# First the device's limit: fio's time for one durable 128 B append (`fio --rw=write --bs=128
# --fdatasync=1 --file_append=1`) in the same directory; a group commit covering all N
# processes would take that / N per record, printed beside each table with mmlog's figure
# and its sync() calls per device flush (`mmlog stat` of the last run's log). Writes
# results/durability.md and .csv (fixed names) with the command lines, date, kernel and
# filesystem.
#   scripts/durability.sh [--runs 3] [--ops 2000] [--procs "1 4 8 16"] [--out DIR] [--dir PATH]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=3
ops=2000
out="$ROOT/results"
dir=""
procs_list="1 4 8 16"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --ops) ops="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --procs) procs_list="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "durability.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
prepare_measurement "$out"
(cd "$ROOT" && swift build -c release --product mmlog >/dev/null)  # mmlog stat, for syncs per flush
md="$out/durability.md"
csv="$out/durability.csv"
rm -f "$csv"
target="${dir:-${TMPDIR:-/tmp}}"
work=$(mktemp -d "$target/durability-XXXXXX")
trap 'rm -rf "$work"' EXIT
# The device's limit: one durable append, alone (fio's mean over 2048 appends).
limit_us=""
if command -v fio >/dev/null; then
    limit_us=$(fio --name=limit --filename="$work/fio.tmp" --rw=write --bs=128 --fdatasync=1 --file_append=1 \
        --size=256k --output-format=json 2>/dev/null | python3 -c 'import json, sys; print("%.0f" % (1e6 / json.load(sys.stdin)["jobs"][0]["write"]["iops"]))' || true)
    rm -f "$work/fio.tmp"
fi
{
    echo "# Durable appends: a sync per record"
    echo
    echo "Machine: $(nproc) cores, kernel $(uname -r), output on $(df -T "$target" | awk 'NR==2 {print $2}') ($target)." \
         "Date: $(date -u +%Y-%m-%dT%H:%MZ). 128-byte records, --fsync-every 1: write() + fdatasync per record," \
         "MMLog.sync() per record (group commit), and cla (the collector appends, fdatasyncs and answers each record)."
    echo "Each table is one invocation; each row the median of $runs runs, backends interleaved."
    echo
    if [ -n "$limit_us" ]; then
        echo "The device's limit: one durable 128 B append takes $limit_us us alone" \
             "(\`fio --name=limit --rw=write --bs=128 --fdatasync=1 --file_append=1 --size=256k\`, mean of 2048, same directory);" \
             "a group commit covering every waiting process would take $limit_us/N us per record."
    else
        echo "The device's limit: not measured (fio is not installed: apt-get install fio)."
    fi
} > "$md"
for procs in $procs_list; do
    cmd="appendbench --procs $procs --ops $ops --size 128 --backends write,mmlog,cla --fsync-every 1 --runs $runs --dir <scratch> --keep --csv $csv${hold[*]:+ ${hold[*]}}"
    echo "running: $cmd" >&2
    rm -rf "$work/run"; mkdir -p "$work/run"
    table=$("$ROOT/scripts/appendbench" --procs "$procs" --ops "$ops" --size 128 --backends write,mmlog,cla --fsync-every 1 \
            --runs "$runs" --dir "$work/run" --keep --csv "$csv" --quiet "${hold[@]}")
    mmlog_us=$(awk -F'|' '$2 ~ /^ mmlog / {gsub(/ /, "", $4); print $4}' <<<"$table")
    syncs=$("$ROOT/.build/release/mmlog" stat "$work/run/mmlog.log" 2>/dev/null | sed -n 's/^syncs *\([0-9]*\) call(s), \([0-9]*\) device flush.*/\1 \2/p')
    {
        echo
        echo "## $procs process(es)"
        echo
        echo '```'
        echo "$cmd"
        echo '```'
        echo
        echo "$table"
        echo
        line="mmlog: $mmlog_us us per record"
        [ -n "$limit_us" ] && line="$line; limit $limit_us/$procs = $(python3 -c "print(f'{$limit_us / $procs:.1f}')") us per record"
        if [ -n "$syncs" ]; then
            read -r calls flushes <<<"$syncs"
            line="$line; $calls sync() calls in $flushes device flushes = $(python3 -c "print(f'{$calls / max($flushes, 1):.2f}')") per flush (the last run)"
        fi
        echo "$line."
    } >> "$md"
done
echo "wrote $md and $csv" >&2
