#!/usr/bin/env bash
# Write amplification of steady logging: for every backend that writes, one process appends
# 100-byte records at a fixed rate (appendbench --rate), and appendbench counts the bytes the
# output's block device wrote during the run (between a syncfs before it and one after)
# against the bytes appended. Two phases, each backend in turn:
#   1. 20 KB/s (200 records/s) for 70 s, the kernel's writeback settings as they are;
#   2. 100 KB/s (1000 records/s) for 25 s with vm.dirty_expire_centisecs = 300 (3 s), set as
#      root and put back on exit, INT and TERM (skipped, and said so, when not root).
# Writes a table to OUT/amplification.md and the figures to OUT/amplification.csv (fixed
# names), with the command line, date, kernel, filesystem and writeback settings.
#   scripts/amplification.sh [--quick] [--out DIR] [--dir PATH] [--backends k1,k2]
#   --quick      3 s and 2 s per backend, into OUT/amplification-quick.md/.csv (a check that
#                it works, not a measurement)
#   --out DIR    where the table goes (default: results/)
#   --dir PATH   where the backends append: its block device is the one measured. Default:
#                as root, a new 1 GiB ext4 filesystem on a loop device, mounted for the run
#                and removed after it, so that the counter sees this run's writes only;
#                otherwise a new directory under $TMPDIR or /tmp (its device is shared)
#   --backends   which backends (default: every one that writes, and mmlog as it ran before
#                adaptive pages); an entry KEY=FLAGS runs backend KEY with those appendbench
#                flags as its own row, e.g. "mmlog=--no-adaptive-pages"
# Progress goes to stderr. The device's counter counts every writer of the device, so run it
# on a quiet machine: anything else writing there inflates the figures.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
out="$ROOT/results"
dir=""
backends="mmlog,mmlog=--no-adaptive-pages --chunk-size 4194304,write,writev,fwrite,direct,aio,uring,cla,cla-async,floor"
quick=0
arguments="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --backends) backends="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "amplification.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
size=100
# phase name | records per second | seconds (full) | seconds (quick) | dirty_expire_centisecs ("" = as it is)
phases=("20 KB/s, writeback as configured|200|70|3|" "100 KB/s, dirty_expire_centisecs 300|1000|25|2|300")
name="amplification"
[ "$quick" -eq 1 ] && name="amplification-quick"
md="$out/$name.md"
csv="$out/$name.csv"

prepare_measurement "$out"   # builds first; sets $hold
work=$(mktemp -d "${TMPDIR:-/tmp}/amplification-XXXXXX")
vm=/proc/sys/vm
saved_expire=""
restore_expire() {
    if [ -n "$saved_expire" ]; then
        echo "$saved_expire" > "$vm/dirty_expire_centisecs"
        echo "restored vm.dirty_expire_centisecs to $saved_expire" >&2
        saved_expire=""
    fi
}
# Each appendbench runs in the background in its own process group (set -m), so that an
# interrupt reaches this script at once and can stop it and its workers before restoring.
set -m
child=""
stop_child() {
    if [ -n "$child" ]; then
        kill -TERM -- "-$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
        child=""
    fi
}
loop_mount=""
loop_device=""
cleanup() {
    stop_child
    restore_expire
    remove_loop_fs
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT    # the EXIT trap restores
trap 'exit 143' TERM

if [ -z "$dir" ] && [ "$(id -u)" -eq 0 ] && command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null; then
    # A filesystem of our own: the loop device's counter sees nothing but this run.
    make_loop_fs ext4 1G "$work/fs.img" "$work/mnt"
    dir="$loop_mount"
    echo "appending on a new ext4 filesystem on $loop_device, mounted at $loop_mount (removed at the end)" >&2
fi
dir_args=()
[ -n "$dir" ] && dir_args=(--dir "$dir")
IFS=, read -ra keys <<<"$backends"
total=$(( ${#phases[@]} * ${#keys[@]} ))
step=0
failed=0
started=$(date +%s)
settings=()
for p in "${!phases[@]}"; do
    IFS='|' read -r title rate seconds quick_seconds expire <<<"${phases[$p]}"
    [ "$quick" -eq 1 ] && seconds=$quick_seconds
    ops=$(( rate * seconds ))
    skipped=""
    if [ -n "$expire" ]; then
        if [ -w "$vm/dirty_expire_centisecs" ]; then
            saved_expire=$(cat "$vm/dirty_expire_centisecs")
            echo "$expire" > "$vm/dirty_expire_centisecs"
        else
            skipped="needs root to set vm.dirty_expire_centisecs"
            echo "phase $(( p + 1 )) ($title) skipped: $skipped" >&2
        fi
    fi
    settings+=("$title: dirty_expire_centisecs $(cat $vm/dirty_expire_centisecs), dirty_writeback_centisecs $(cat $vm/dirty_writeback_centisecs), dirty_background_ratio $(cat $vm/dirty_background_ratio)%, dirty_ratio $(cat $vm/dirty_ratio)%${skipped:+ (skipped: $skipped)}")
    for entry in "${keys[@]}"; do
        step=$(( step + 1 ))
        [ -n "$skipped" ] && continue
        key="${entry%%=*}"
        flags=()
        [ "$entry" != "$key" ] && read -ra flags <<<"${entry#*=}"
        elapsed=$(( $(date +%s) - started ))
        left=$(( (total - step + 1) * seconds ))
        echo "[$step/$total] $title: $entry, $ops records of $size B at $rate/s (${elapsed}s so far, ~${left}s of runs left)" >&2
        echo "$step|$p|$entry" >> "$work/labels"
        "$ROOT/.build/release/appendbench" --procs 1 --ops "$ops" --size "$size" --rate "$rate" --backends "$key" "${flags[@]}" \
            "${dir_args[@]}" --csv "$work/run-$step.csv" --quiet "${hold[@]}" > "$work/table.txt" &
        child=$!
        if wait "$child"; then status=0; else status=$?; fi
        child=""
        if [ "$status" -ne 0 ]; then
            failed=$(( failed + 1 ))
            echo "  $key failed or did not verify:" >&2
            grep -E "FAILED|^- |unsupported" "$work/table.txt" >&2 || true
        fi
        grep -E "^\| " "$work/table.txt" | tail -1 | sed 's/^/  /' >&2
    done
    restore_expire
done

command_line="scripts/amplification.sh${arguments:+ $arguments}"
OWN_FS="$([ -n "$loop_device" ] && echo 1 || echo 0)" PHASE_TITLES="$(printf '%s\n' "${phases[@]}" | cut -d'|' -f1)" SETTINGS="$(printf '%s\n' "${settings[@]}")" \
python3 - "$work" "$md" "$csv" "$command_line" "$(date -u +%Y-%m-%dT%H:%MZ)" "$quick" <<'PY'
import csv, os, sys
work, md, out_csv, command, date, quick = sys.argv[1:]
titles = os.environ["PHASE_TITLES"].splitlines()
settings = os.environ["SETTINGS"].splitlines()
rows = []
with open(os.path.join(work, "labels")) as handle:
    for line in handle.read().splitlines():
        step, p, label = line.split("|", 2)
        path = os.path.join(work, f"run-{step}.csv")
        if os.path.exists(path):
            with open(path, newline="") as run:
                rows += [dict(row, phase=titles[int(p)], backend=label.replace("=", " ")) for row in csv.DictReader(run)]
if not rows:
    sys.exit("amplification.sh: no runs to report")
first = rows[0]
fields = ["phase", "backend", "rate", "size", "ops", "total_ms", "payload_bytes", "device", "device_bytes",
          "write_amplification", "verified", "error", "kernel", "filesystem", "date"]
with open(out_csv, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        payload = int(row["ops"]) * int(row["procs"]) * int(row["size"])
        writer.writerow(dict(row, payload_bytes=payload))

def cell(row):
    if row is None:
        return "not run"
    if row["verified"] != "yes":
        return f"{row['verified']}: {row['error']}".replace("|", "/")
    if not row["write_amplification"]:
        return "n/a (no block device)"
    payload = int(row["ops"]) * int(row["procs"]) * int(row["size"])
    return f"{float(row['write_amplification']):.2f} ({int(row['device_bytes']):,} / {payload:,})"

backends = list(dict.fromkeys(row["backend"] for row in rows))
lines = ["# Write amplification of steady logging" + (" (--quick: a check, not a measurement)" if quick == "1" else ""), "",
         "```", command, "```", "",
         f"Date: {date}. Kernel {first['kernel']}, output on {first['filesystem']}"
         f" (block device {first['device']}).", "",
         "One process appends 100-byte records at a fixed rate (`appendbench --procs 1 --size 100 --rate N`); each cell is the "
         "bytes the block device wrote during the run (its sectors-written counter between a syncfs before the run and one "
         "after) over the bytes appended, then (device bytes / appended bytes). "
         + ("The output is a new ext4 filesystem on a loop device of its own (1 GiB image, default mkfs.ext4 options), so the "
            "counter sees this run's writes only: data, metadata files, the journal." if os.environ.get("OWN_FS") == "1" else
            "Anything else writing to the device meanwhile counts too."), "",
         "Writeback settings per phase:", ""] + [f"- {line}" for line in settings] + [""]
lines.append("| backend | " + " | ".join(titles) + " |")
lines.append("|---|" + "---|" * len(titles))
for backend in backends:
    cells = [cell(next((r for r in rows if r["backend"] == backend and r["phase"] == t), None)) for t in titles]
    lines.append(f"| {backend} | " + " | ".join(cells) + " |")
with open(md, "w") as handle:
    handle.write("\n".join(lines) + "\n")
PY
echo "wrote $md and $csv ($(( $(date +%s) - started ))s, $failed runs failed)" >&2
[ "$failed" -eq 0 ]
