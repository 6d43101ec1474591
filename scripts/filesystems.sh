#!/usr/bin/env bash
# MMLog on other filesystems: for each of ext4, XFS and btrfs, a new 4 GiB filesystem on a
# loop device (as root; mkfs.xfs and mkfs.btrfs from Debian's xfsprogs and btrfs-progs), and
# tmpfs (a new 4 GiB mount), and on it: the burst ratios (4 processes, 1 B, 128 B and 4095 B,
# mmlog against write(), median of --runs), durable appends (--fsync-every 1, 128 B, 1 and 4
# processes; not on tmpfs, which has no device), and the write amplification of steady
# logging (scripts/amplification.sh --dir on the mount, mmlog and write; not on tmpfs). Every
# mount and loop device is removed on exit, INT and TERM. Writes results/filesystems.md
# (fixed name) with the command lines, date and kernel.
#   scripts/filesystems.sh [--runs 5] [--fs "ext4 xfs btrfs tmpfs"] [--no-amplification] [--no-durable] [--out DIR]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=5
filesystems="ext4 xfs btrfs tmpfs"
amplification=1
durable=1
out="$ROOT/results"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --fs) filesystems="$2"; shift 2 ;;
        --no-amplification) amplification=0; shift ;;
        --no-durable) durable=0; shift ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "filesystems.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then echo "filesystems.sh: needs root (loop devices and mounts)" >&2; exit 1; fi
prepare_measurement "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/filesystems-XXXXXX")
loop_mount=""
loop_device=""
cleanup() {
    remove_loop_fs
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
md="$out/filesystems.md"
{
    echo "# MMLog on ext4, XFS, btrfs and tmpfs"
    echo
    echo "Date: $(date -u +%Y-%m-%dT%H:%MZ). Kernel $(uname -r), $(nproc) cores. Each filesystem is new, made with its" \
         "mkfs's defaults on a 4 GiB loop device (image in ${TMPDIR:-/tmp}). Burst and durable tables: one invocation" \
         "each, median of $runs runs (durable: 3), mmlog / write() from the same invocation."
} > "$md"
for fs in $filesystems; do
    if [ "$fs" = tmpfs ]; then
        mkdir -p "$work/tmpfs"
        mount -t tmpfs -o size=4G tmpfs "$work/tmpfs"
        loop_mount="$work/tmpfs"
        mnt="$loop_mount"
        echo "tmpfs at $mnt" >&2
    else
        command -v "mkfs.$fs" >/dev/null || { echo "filesystems.sh: mkfs.$fs missing (apt-get install xfsprogs btrfs-progs)" >&2; echo -e "\n## $fs\n\nnot measured: mkfs.$fs is not installed" >> "$md"; continue; }
        make_loop_fs "$fs" 4G "$work/$fs.img" "$work/$fs"
        mnt="$loop_mount"
        echo "$fs on $loop_device at $mnt" >&2
    fi
    { echo; echo "## $fs"; } >> "$md"
    specs=("1|100000|" "128|100000|" "4095|10000|")
    [ "$durable" -eq 1 ] && [ "$fs" != tmpfs ] && specs+=("128|2000|--fsync-every 1")
    for spec in "${specs[@]}"; do
        IFS='|' read -r size ops extra <<<"$spec"
        read -ra extra_args <<<"$extra"
        procs_list="4"
        [ -n "$extra" ] && procs_list="1 4"
        for procs in $procs_list; do
            r=$runs
            [ -n "$extra" ] && r=3
            cmd="appendbench --procs $procs --ops $ops --size $size --backends mmlog,write${extra:+ $extra} --runs $r --dir <mount>${hold[*]:+ ${hold[*]}}"
            echo "  $cmd" >&2
            {
                echo; echo '```'; echo "$cmd"; echo '```'; echo
                "$ROOT/scripts/appendbench" --procs "$procs" --ops "$ops" --size "$size" --backends mmlog,write "${extra_args[@]}" \
                    --runs "$r" --dir "$mnt" --quiet "${hold[@]}" || echo "(a backend failed: see above)"
            } >> "$md"
        done
    done
    if [ "$amplification" -eq 1 ] && [ "$fs" != tmpfs ]; then
        echo "  scripts/amplification.sh --dir <mount> --backends mmlog,write" >&2
        "$ROOT/scripts/amplification.sh" --dir "$mnt" --backends mmlog,write --out "$work/amp-$fs" 2>/dev/null
        { echo; echo "Write amplification (\`scripts/amplification.sh --dir <mount> --backends mmlog,write\`):"; echo
          grep -E "^\|" "$work/amp-$fs/amplification.md"; } >> "$md"
    fi
    remove_loop_fs
    rm -f "$work/$fs.img"
done
echo "wrote $md" >&2
