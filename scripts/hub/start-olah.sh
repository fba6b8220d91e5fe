#!/usr/bin/env bash
# Starts a loopback Hugging Face Hub (olah, offline mode) that serves the bare git
# repositories under $KERNELS_HUB_DIR/mirrors/kernels/<org>/<name> as Hub repos of
# type `kernel`.
#
# Usage: scripts/hub/start-olah.sh [--port N] [--install-only]
#
#   --port N         listen on 127.0.0.1:N (default: $OLAH_PORT, else a free port)
#   --install-only   only install olah into the virtual environment, then exit
#
# On success the only line on stdout is `HF_ENDPOINT=http://127.0.0.1:<port>`, so
# `export "$(scripts/hub/start-olah.sh)"` points the current shell at it. The same
# URL is written to $KERNELS_HUB_DIR/endpoint and the server pid to
# $KERNELS_HUB_DIR/olah.pid. Running it again while the server is up prints the
# endpoint of the running server. Stop it with scripts/hub/stop-olah.sh.
#
# Needs python3 >= 3.10 and network access to PyPI the first time (olah and its
# dependencies are installed at the exact versions of olah-requirements.txt).
set -euo pipefail

# shellcheck source=scripts/hub/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

port="${OLAH_PORT:-}"
install_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port="${2:?--port needs a value}"; shift 2 ;;
        --port=*) port="${1#--port=}"; shift ;;
        --install-only) install_only=1; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) hub_die "unknown argument '$1' (see --help)" ;;
    esac
done

install_olah() {
    local requirements="$hub_repo_root/scripts/hub/olah-requirements.txt"
    local stamp="$hub_venv/.olah-requirements.sha256"
    local want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ -x "$hub_venv/bin/olah-cli" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    local python="${PYTHON:-python3}"
    command -v "$python" >/dev/null || hub_die "$python not found; olah needs Python >= 3.10 (set PYTHON=...)"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || hub_die "olah needs Python >= 3.10, $python is $("$python" --version 2>&1)"
    echo "installing olah $hub_olah_version into $hub_venv" >&2
    "$python" -m venv "$hub_venv"
    "$hub_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$requirements" >&2 \
        || hub_die "pip could not install $requirements into $hub_venv"
    "$hub_venv/bin/python" -c "import olah" \
        || hub_die "olah does not import after installation into $hub_venv"
    echo "$want" >"$stamp"
}

install_olah
[ "$install_only" = 1 ] && exit 0

if pid="$(hub_running_pid)" && [ -f "$hub_endpoint_file" ]; then
    running="$(cat "$hub_endpoint_file")"
    if [ -n "$port" ] && [ "$running" != "http://127.0.0.1:$port" ]; then
        hub_die "olah already runs on $running (pid $pid); stop it first with scripts/hub/stop-olah.sh"
    fi
    echo "olah already running (pid $pid)" >&2
    echo "HF_ENDPOINT=$running"
    exit 0
fi

if [ -z "$port" ]; then
    port="$("$hub_venv/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')"
fi
case "$port" in
    ''|*[!0-9]*) hub_die "port must be a number, got '$port'" ;;
esac
# A busy port would let the readiness check below talk to another server.
"$hub_venv/bin/python" -c '
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as e:
    sys.exit(f"error: 127.0.0.1:{sys.argv[1]} is not free ({e.strerror}); pick another --port")
' "$port"

mkdir -p "$hub_mirrors/kernels" "$hub_dir/repos" "$hub_dir/logs"
endpoint="http://127.0.0.1:$port"

# Offline: olah never contacts an upstream and answers only from the local mirrors
# (and its own, here empty, cache). The upstream is pointed at the discard port so
# that nothing could leave the machine even if an offline check were missed.
cat >"$hub_dir/olah.toml" <<EOF
[basic]
host = "127.0.0.1"
port = $port
repos-path = "$hub_dir/repos"
mirrors-path = ["$hub_mirrors"]
hf-scheme = "http"
hf-netloc = "127.0.0.1:9"
hf-lfs-netloc = "127.0.0.1:9"
mirror-scheme = "http"
mirror-netloc = "127.0.0.1:$port"
mirror-lfs-netloc = "127.0.0.1:$port"

[accessibility]
offline = true
EOF

rm -f "$hub_pid_file" "$hub_endpoint_file"
started_ns="$(date +%s%N)"
(
    cd "$hub_dir"
    # Own session: a Ctrl-C meant for the caller's shell does not reach the server.
    setsid=()
    command -v setsid >/dev/null && setsid=(setsid)
    exec "${setsid[@]}" "$hub_venv/bin/olah-cli" -c "$hub_dir/olah.toml" --log-path "$hub_dir/logs" \
        </dev/null >"$hub_dir/logs/server.log" 2>&1
) &
pid=$!
echo "$pid" >"$hub_pid_file"

# Wait until its API answers, at most 60 s. Any HTTP status counts (a repo that does
# not exist gets 401); olah's index page cannot be used, it fails with 500 under the
# pinned starlette.
if ! "$hub_venv/bin/python" - "$endpoint/api/kernels/kernels-rs/readiness-probe/refs" "$pid" <<'EOF'
import os, sys, time, urllib.error, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("olah exited during start-up")
    try:
        with urllib.request.urlopen(url, timeout=2):
            sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit("olah did not answer within 60 s")
EOF
then
    kill "$pid" 2>/dev/null || true
    rm -f "$hub_pid_file"
    echo "--- $hub_dir/logs/server.log (tail) ---" >&2
    tail -n 30 "$hub_dir/logs/server.log" >&2 || true
    hub_die "olah did not start on $endpoint"
fi

echo "$endpoint" >"$hub_endpoint_file"
elapsed_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
echo "olah $hub_olah_version (pid $pid) serving $hub_mirrors on $endpoint, up in ${elapsed_ms} ms" >&2
echo "HF_ENDPOINT=$endpoint"
