#!/usr/bin/env bash
# Durable appends: every record made durable before the next (--fsync-every 1) at 128 B, for
# 1, 4 and 8 processes: write() + fdatasync per record, mmlog + sync() per record (group
# commit across the processes), and the article's acknowledged central log service (its
# collector fdatasyncs after every record). One invocation per process count, backends
# interleaved, median of --runs; the mmlog / write ratio comes from the same invocation.
# Writes results/durability.md and .csv (fixed names) with the command lines, date, kernel and
# filesystem.
#   scripts/durability.sh [--runs 3] [--ops 2000] [--out DIR] [--dir PATH]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=3
ops=2000
out="$ROOT/results"
dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --ops) ops="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "durability.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
prepare_measurement "$out"
md="$out/durability.md"
csv="$out/durability.csv"
rm -f "$csv"
target="${dir:-${TMPDIR:-/tmp}}"
dir_args=()
[ -n "$dir" ] && dir_args=(--dir "$dir")
{
    echo "# Durable appends: a sync per record"
    echo
    echo "Machine: $(nproc) cores, kernel $(uname -r), output on $(df -T "$target" | awk 'NR==2 {print $2}') ($target)." \
         "Date: $(date -u +%Y-%m-%dT%H:%MZ). 128-byte records, --fsync-every 1: write() + fdatasync per record," \
         "MMLog.sync() per record (group commit), and cla (the collector appends, fdatasyncs and answers each record)."
    echo "Each table is one invocation; each row the median of $runs runs, backends interleaved."
} > "$md"
for procs in 1 4 8; do
    cmd="appendbench --procs $procs --ops $ops --size 128 --backends write,mmlog,cla --fsync-every 1 --runs $runs${dir:+ --dir $dir} --csv $csv${hold[*]:+ ${hold[*]}}"
    echo "running: $cmd" >&2
    {
        echo
        echo "## $procs process(es)"
        echo
        echo '```'
        echo "$cmd"
        echo '```'
        echo
        "$ROOT/scripts/appendbench" --procs "$procs" --ops "$ops" --size 128 --backends write,mmlog,cla --fsync-every 1 \
            --runs "$runs" "${dir_args[@]}" --csv "$csv" --quiet "${hold[@]}"
    } >> "$md"
done
echo "wrote $md and $csv" >&2
