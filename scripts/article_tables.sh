#!/usr/bin/env bash
# Re-measures the article's three result tables on this machine with every backend and
# writes them, with their command lines, to results/article-tables.md (and .csv).
#   scripts/article_tables.sh [--runs 5] [--out results]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=5
out="$ROOT/results"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
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

for spec in "128 100000" "1 100000" "4095 10000"; do
    set -- $spec
    cmd="appendbench --procs 4 --ops $2 --size $1 --runs $runs --csv $csv${hold[*]:+ ${hold[*]}}"
    echo "running: $cmd" >&2
    {
        echo
        echo "## $1-byte records"
        echo
        echo '```'
        echo "$cmd"
        echo '```'
        echo
        "$ROOT/scripts/appendbench" --procs 4 --ops "$2" --size "$1" --runs "$runs" --csv "$csv" --quiet "${hold[@]}"
    } >> "$md"
done
echo "wrote $md and $csv" >&2
