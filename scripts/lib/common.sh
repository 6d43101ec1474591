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
