#!/usr/bin/env bash
# Downloads, once, the wheels scripts/python-latency.sh installs on the GPU machine (whose
# python3 is 3.12 and has no network): the pinned kernels and apache-tvm-ffi, and tomlkit.
#
#   bash scripts/python-wheels.sh [DIR]      (default DIR: <repo>/.cache/py312-wheels)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$here/.cache/py312-wheels}"
mkdir -p "$dir"
python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
    --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$dir" \
    "kernels==0.19.1" "apache-tvm-ffi==0.1.15.post2" "tomlkit==0.15.3"
ls "$dir"
