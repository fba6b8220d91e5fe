#!/usr/bin/env bash
# Checks the loopback Hub end to end: builds a small kernel repo with make-repo.sh,
# starts olah on it in a scratch state directory, asks it what hf-hub asks (refs,
# revision info, tree, file HEAD/GET) and compares the answers with git, then stops
# it. Leaves nothing behind. Exit status 0 means the Hub harness works here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scratch="$(mktemp -d)"
export KERNELS_HUB_DIR="$scratch/hub"
cleanup() {
    "$here/stop-olah.sh" 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

# A Hub-layout kernel repo with dummy content: one tvm-ffi variant, one torch one.
src="$scratch/src"
variant="build/tvm-ffi01-cpu-x86_64-linux"
mkdir -p "$src/$variant" "$src/build/torch29-cxx11-cpu-x86_64-linux"
printf -- '---\nlicense: apache-2.0\n---\n# selftest kernel\n' >"$src/README.md"
printf '{"id": "_selftest_0000000", "backend": {"type": "cpu"}}\n' >"$src/$variant/metadata.json"
head -c 4096 /dev/zero | tr '\0' '\177' >"$src/$variant/_selftest_0000000.so"
printf '{"id": "_selftest_torch"}\n' >"$src/build/torch29-cxx11-cpu-x86_64-linux/metadata.json"

commit="$("$here/make-repo.sh" selftest/kernel "$src")"
again="$("$here/make-repo.sh" selftest/kernel "$src")"
[ "$commit" = "$again" ] || { echo "make-repo.sh is not deterministic: $commit vs $again" >&2; exit 1; }

endpoint_line="$("$here/start-olah.sh")"
endpoint="${endpoint_line#HF_ENDPOINT=}"

# shellcheck source=scripts/hub/common.sh
. "$here/common.sh"
"$hub_venv/bin/python" - "$endpoint" "$commit" "$variant" "$src" <<'EOF'
import hashlib, json, sys, urllib.error, urllib.request

endpoint, commit, variant, src = sys.argv[1:]
repo = "selftest/kernel"


def call(method, path):
    req = urllib.request.Request(endpoint + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def check(cond, what):
    if not cond:
        sys.exit(f"selftest failed: {what}")
    print(f"ok: {what}")


status, _, body = call("GET", f"/api/kernels/{repo}/refs")
refs = json.loads(body)
branches = {b["name"]: b["targetCommit"] for b in refs["branches"]}
check(status == 200 and branches == {"main": commit, "v1": commit}, "refs list main and v1 at the commit")

status, _, body = call("GET", f"/api/kernels/{repo}/revision/v1")
info = json.loads(body)
check(status == 200 and info["sha"] == commit, "revision/v1 resolves to the commit")

status, _, body = call("GET", f"/api/kernels/{repo}/tree/{commit}/{variant}")
files = {e["path"]: e["size"] for e in json.loads(body) if e["type"] == "file"}
check(status == 200 and files == {
    f"{variant}/metadata.json": len(open(f"{src}/{variant}/metadata.json", "rb").read()),
    f"{variant}/_selftest_0000000.so": 4096,
}, "tree lists the variant's files with sizes")

path = f"{variant}/_selftest_0000000.so"
status, headers, _ = call("HEAD", f"/kernels/{repo}/resolve/v1/{path}")
headers = {k.lower(): v for k, v in headers.items()}
check(status == 200 and headers.get("x-repo-commit") == commit and headers.get("etag"),
      "HEAD resolve gives x-repo-commit and etag")
status, _, body = call("GET", f"/kernels/{repo}/resolve/{commit}/{path}")
want = open(f"{src}/{path}", "rb").read()
check(status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(want).digest(),
      "GET resolve returns the exact bytes")

status, _, _ = call("GET", f"/api/kernels/{repo}/revision/v9")
check(status == 401, "unknown revision answers 401 (the Hub answers 404)")
EOF

"$here/stop-olah.sh"
echo "loopback Hub selftest passed"
