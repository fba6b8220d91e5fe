#!/usr/bin/env bash
# Stops the loopback Hub started by scripts/hub/start-olah.sh (the process named in
# $KERNELS_HUB_DIR/olah.pid, and only if that process is olah). Does nothing when it
# is not running. The mirrors are kept.
set -euo pipefail

# shellcheck source=scripts/hub/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if ! pid="$(hub_running_pid)"; then
    echo "olah is not running" >&2
    rm -f "$hub_pid_file" "$hub_endpoint_file"
    exit 0
fi

kill -TERM "$pid"
# Gone, or a zombie waiting for its parent to reap it.
alive() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]; }
for _ in $(seq 1 100); do
    alive "$pid" || break
    sleep 0.1
done
if alive "$pid"; then
    echo "olah (pid $pid) ignored SIGTERM for 10 s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$hub_pid_file" "$hub_endpoint_file"
echo "olah (pid $pid) stopped" >&2
