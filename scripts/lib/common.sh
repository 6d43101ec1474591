# Shared by the scripts: find the package root and make sure the C libraries are installed.
# Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="/opt/swift/usr/bin:$PATH"

# Installs libaio-dev and liburing-dev when missing (as root), or says what to install.
ensure_system_packages() {
    local missing=()
    for pkg in libaio-dev liburing-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "appendbench needs: ${missing[*]}. Install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]} ..." >&2
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}

require_swift() {
    command -v swift >/dev/null || { echo "swift not found: install Swift 6 (expected at /opt/swift)" >&2; exit 1; }
}

# Before a measuring script's first run: makes the output directory $1 and builds the harness,
# so that no build lands inside a measurement. Sets $hold to the arguments that hold a VM's free
# page reporting off for each invocation (--hold-page-reporting, when this user may; README
# "Memory on a VM"), else to none. Results go to fixed names (results/README.md): a new run
# replaces the last one, and git keeps the history.
prepare_measurement() {
    mkdir -p "$1"
    hold=()
    if [ -w /sys/module/page_reporting/parameters/page_reporting_order ]; then
        hold=(--hold-page-reporting)
    elif [ -e /sys/module/page_reporting/parameters/page_reporting_order ]; then
        echo "note: free page reporting stays on (holding it needs root); runs may draw on memory the host took back" >&2
    fi
    "$ROOT/scripts/appendbench" --help >/dev/null
}

# Prints the calling script's header comment (every leading `#` line after the shebang) as its
# --help, so the help never cuts a line off.
usage() {
    awk 'NR > 1 { if (!/^#/) exit; sub(/^# ?/, ""); print }' "$0"
}

# A new filesystem of type $1 (ext4, xfs, btrfs) on a loop device: an image of $2 bytes at $3,
# mounted at $4 (made if missing). Sets $loop_device and $loop_mount; remove_loop_fs undoes it
# (safe to call twice, and from an EXIT trap).
make_loop_fs() {
    local type="$1" size="$2" image="$3" mountpoint="$4"
    truncate -s "$size" "$image"
    case "$type" in
        ext4) mkfs.ext4 -q -F "$image" ;;
        xfs) mkfs.xfs -q -f "$image" ;;
        btrfs) mkfs.btrfs -q -f "$image" >/dev/null ;;
        *) echo "make_loop_fs: unknown filesystem $type" >&2; return 1 ;;
    esac
    loop_device=$(losetup --find --show "$image")
    mkdir -p "$mountpoint"
    mount "$loop_device" "$mountpoint"
    loop_mount="$mountpoint"
}

remove_loop_fs() {
    if [ -n "${loop_mount:-}" ]; then
        umount "$loop_mount" 2>/dev/null || umount -l "$loop_mount" 2>/dev/null || true
        loop_mount=""
    fi
    if [ -n "${loop_device:-}" ]; then
        losetup -d "$loop_device" 2>/dev/null || true
        loop_device=""
    fi
}
