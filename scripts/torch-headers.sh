#!/usr/bin/env bash
# Fetch PyTorch's C++ headers (`torch/include` of the pinned `torch` wheel) into a git-ignored
# cache, for building torch stable-ABI test kernels without libtorch.
#
#   scripts/torch-headers.sh          # prints the include directory as the last stdout line
#
# The first run downloads the pinned wheel from PyPI with pip (verified against its sha256
# through `--require-hashes`), extracts only `torch/include` and deletes the wheel; later runs
# reuse the cache. The headers do not depend on the wheel's platform or Python version.
#
# Knobs: TORCH_HEADERS_CACHE (default <repo>/.cache), PYTHON (default python3; needs pip).
set -euo pipefail

torch_pin="2.11.0"
wheel="torch-${torch_pin}-cp312-cp312-manylinux_2_28_x86_64.whl"
wheel_sha256="0f68f4ac6d95d12e896c3b7a912b5871619542ec54d3649cf48cc1edd4dd2756"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${TORCH_HEADERS_CACHE:-$repo/.cache}"
python="${PYTHON:-python3}"
dest="$cache/torch-$torch_pin"
include="$dest/include"
stamp="$dest/.complete"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wheel_sha256" ] \
    && [ -f "$include/torch/csrc/stable/library.h" ]; then
    echo "$include"
    exit 0
fi

mkdir -p "$cache"
work="$(mktemp -d "$cache/.torch-headers.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "torch-headers: downloading $wheel from PyPI (once; only torch/include is kept)" >&2
printf 'torch==%s --hash=sha256:%s\n' "$torch_pin" "$wheel_sha256" >"$work/requirements.txt"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.12 \
    --implementation cp --require-hashes -r "$work/requirements.txt" -d "$work/wheel" >&2 || {
    echo "torch-headers: pip could not download $wheel with sha256 $wheel_sha256 (needs PyPI)" >&2
    exit 1
}
if [ ! -f "$work/wheel/$wheel" ]; then
    echo "torch-headers: pip did not leave $wheel in $work/wheel" >&2
    exit 1
fi

# Only the headers, refusing any member that would land outside the target directory.
"$python" - "$work/wheel/$wheel" "$work/out" >&2 <<'EOF'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "torch/include/"
n = 0
with zipfile.ZipFile(wheel) as z:
    for m in z.infolist():
        if not m.filename.startswith(prefix) or m.is_dir():
            continue
        rel = m.filename[len(prefix):]
        parts = rel.split("/")
        if not rel or ".." in parts or rel.startswith("/"):
            sys.exit(f"torch-headers: refusing wheel member {m.filename!r}")
        target = os.path.join(out, "include", *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(m) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        n += 1
if n == 0:
    sys.exit(f"torch-headers: {wheel} has no {prefix}")
print(f"torch-headers: extracted {n} header files", file=sys.stderr)
EOF
rm -rf "$work/wheel"
if [ ! -f "$work/out/include/torch/csrc/stable/library.h" ]; then
    echo "torch-headers: the wheel lacks torch/csrc/stable/library.h" >&2
    exit 1
fi
printf '%s' "$wheel_sha256" >"$work/out/.complete"

# Replace any partial cache whole.
rm -rf "$dest"
mv "$work/out" "$dest"
echo "$include"
