#!/usr/bin/env bash
# Re-measures the article's three result tables on this machine with every backend (the
# central log service, journald and syslog included; journald needs root) and writes them, with their command lines, to
# results/article-tables.md (and .csv), replacing the last ones. A fourth table is the
# 128-byte one with --fsync-every 1 for cla, write, mmlog, journald and syslog: the article's
# original service (append, fsync, answer) beside write() and mmlog with a sync per record, and
# the two system log daemons syncing per record (journald: every record at priority crit;
# syslog-ng: fsync(yes) with flush-lines(1)), which nobody waits for.
#   scripts/article_tables.sh [--runs 5] [--out results]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=5
out="$ROOT/results"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "usage: scripts/article_tables.sh [--runs N] [--out DIR]" >&2; exit 64 ;;
    esac
done
prepare_measurement "$out"   # builds once, before the clock matters
md="$out/article-tables.md"
csv="$out/article-tables.csv"
rm -f "$csv"

{
    echo "# The article's tables, re-measured"
    echo
    echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)," \
         "output on $(df -T /tmp | awk 'NR==2 {print $2}') (/tmp). Date: $(date -u +%Y-%m-%dT%H:%MZ)."
    echo "Each row is the median of $runs runs, backends interleaved within each run; ratios come from the same invocation."
    echo "Throughput is payload GB/s (1e9 bytes/s); the article's column is Gibit/s (x 7.451)."
} > "$md"

# size, ops per process, extra arguments, title
tables=(
    "128|100000||128-byte records"
    "1|100000||1-byte records"
    "4095|10000||4095-byte records"
    # An fdatasync per record costs a device flush (a millisecond or more): fewer records.
    "128|2000|--backends cla,write,mmlog,journald,syslog --fsync-every 1|128-byte records, durable: --fsync-every 1"
)
for spec in "${tables[@]}"; do
    IFS='|' read -r size ops extra title <<<"$spec"
    read -ra extra_args <<<"$extra"
    cmd="appendbench --procs 4 --ops $ops --size $size${extra:+ $extra} --runs $runs --csv $csv${hold[*]:+ ${hold[*]}}"
    echo "running: $cmd" >&2
    {
        echo
        echo "## $title"
        echo
        echo '```'
        echo "$cmd"
        echo '```'
        echo
        "$ROOT/scripts/appendbench" --procs 4 --ops "$ops" --size "$size" "${extra_args[@]}" --runs "$runs" --csv "$csv" \
            --quiet "${hold[@]}"
    } >> "$md"
done
echo "wrote $md and $csv" >&2
