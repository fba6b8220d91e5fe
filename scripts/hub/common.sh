# shellcheck shell=bash disable=SC2034
# Shared settings of the loopback Hub scripts. Sourced, not run.
#
# KERNELS_HUB_DIR   state directory (default: <repo>/target/loopback-hub). Holds
#                   mirrors/kernels/<org>/<name> (bare git repos served by olah),
#                   olah.toml, olah.pid, endpoint, logs/ and olah's own cache.
# KERNELS_HUB_VENV  Python virtual environment with olah (default: <repo>/.venv-olah)

hub_repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
hub_dir="${KERNELS_HUB_DIR:-$hub_repo_root/target/loopback-hub}"
hub_venv="${KERNELS_HUB_VENV:-$hub_repo_root/.venv-olah}"
hub_mirrors="$hub_dir/mirrors"
hub_pid_file="$hub_dir/olah.pid"
hub_endpoint_file="$hub_dir/endpoint"
hub_olah_version="$(sed -n 's/^olah==//p' "$hub_repo_root/scripts/hub/olah-requirements.txt")"

hub_die() {
    echo "error: $*" >&2
    exit 1
}

# Prints the pid recorded in the pid file if that process is alive and is olah.
hub_running_pid() {
    [ -f "$hub_pid_file" ] || return 1
    local pid
    pid="$(cat "$hub_pid_file")"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'olah-cli' || return 1
    echo "$pid"
}
