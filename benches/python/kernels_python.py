"""The same tvm-ffi CUDA kernels through Python `kernels` and PyTorch, for the Rust figures.

Run on the GPU machine by scripts/python-latency.sh, beside the Rust binaries that
scripts/build-gpu-check.sh packs:

    python3 kernels_python.py percall KERNEL_DIR
    python3 kernels_python.py firstcall KERNEL_DIR DEMO [ROUNDS]

`percall`: host µs per call (a loop of calls, the stream synchronised once at the end, the
median of 11 rounds, cases rotated) at the latency table's decode shapes, for
- `kernels-prealloc`: the kernel through `kernels.get_local_kernel`, into an output made once;
- `kernels-alloc`: the same with `torch.empty_like` per call (what a layer that returns a new
  tensor pays, as a `#[kernelize]` layer does);
- `torch`: PyTorch's own op (`torch.nn.functional.rms_norm`; `silu(a) * b`).
Also the `kernels-prealloc` call on a 1-element tensor.

`firstcall`: wall time from spawn to exit of a process that loads the kernels and calls
rms_norm and silu_and_mul once on [1 x 1024] on the GPU, as separate processes, interleaved:
Python (`import torch, kernels`, `get_local_kernel`), the Rust demo (`DEMO --device cuda
--once 1024`, kernels on) and the demo with DISABLE_KERNEL_MAPPING=1.
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPES = [(1, 4096), (8, 4096), (128, 2048)]
EPS = 1e-6


def percall(kernel_dir):
    import torch
    import torch.nn.functional as F

    import kernels

    k = kernels.get_local_kernel(Path(kernel_dir))
    print(f"torch {torch.__version__}, kernels {kernels.__version__ if hasattr(kernels, '__version__') else '?'}, "
          f"{torch.cuda.get_device_name()}")
    print(f"{'op':<13} {'dtype':<5} {'shape':<10} {'impl':<17} {'host us':>9} {'/torch':>7}")
    rounds, calls = 11, 200
    for rows, hidden in SHAPES:
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
            w = torch.rand(hidden, device="cuda", dtype=dtype) + 0.5
            out = torch.empty_like(x)
            half = torch.empty(rows, hidden // 2, device="cuda", dtype=dtype)
            a, b = x[:, : hidden // 2], x[:, hidden // 2 :]
            cases = {
                ("rms_norm", "kernels-prealloc"): lambda: k.rms_norm(x, w, EPS, out),
                ("rms_norm", "kernels-alloc"): lambda: k.rms_norm(x, w, EPS, torch.empty_like(x)),
                ("rms_norm", "torch"): lambda: F.rms_norm(x, (hidden,), w, EPS),
                ("silu_and_mul", "kernels-prealloc"): lambda: k.silu_and_mul(x, half),
                ("silu_and_mul", "kernels-alloc"): lambda: k.silu_and_mul(x, torch.empty_like(half)),
                ("silu_and_mul", "torch"): lambda: F.silu(a) * b,
            }
            if rows == 1:
                one_x = torch.randn(1, 1, device="cuda", dtype=dtype)
                one_w = torch.ones(1, device="cuda", dtype=dtype)
                one_out = torch.empty_like(one_x)
                cases[("rms_norm", "kernels-1-element")] = lambda: k.rms_norm(one_x, one_w, EPS, one_out)
            samples = {key: [] for key in cases}
            for f in cases.values():
                f()
            torch.cuda.synchronize()
            for _ in range(rounds):
                for key, f in cases.items():
                    t = time.perf_counter()
                    for _ in range(calls):
                        f()
                    torch.cuda.synchronize()
                    samples[key].append((time.perf_counter() - t) * 1e6 / calls)
            dt = "bf16" if dtype == torch.bfloat16 else "f32"
            for (op, impl), v in samples.items():
                us = statistics.median(v)
                ref = statistics.median(samples[(op, "torch")])
                print(f"{op:<13} {dt:<5} {rows}x{hidden:<8} {impl:<17} {us:>9.2f} {us / ref:>7.3f}")
                print(f"RESULT python-latency op={op} dtype={dt} shape={rows}x{hidden} impl={impl} "
                      f"host_us={us:.3f} host_over_torch={us / ref:.3f}")


FIRST = """
import sys
from pathlib import Path
import torch, kernels
k = kernels.get_local_kernel(Path(sys.argv[1]))
x = torch.randn(1, 1024, device="cuda")
w = torch.ones(1024, device="cuda")
k.rms_norm(x, w, 1e-6, torch.empty_like(x))
k.silu_and_mul(x, torch.empty(1, 512, device="cuda"))
torch.cuda.synchronize()
"""


def firstcall(kernel_dir, demo, rounds):
    cases = {
        "python-kernels": ([sys.executable, "-c", FIRST, kernel_dir], {}),
        "rust-demo": ([demo, "--device", "cuda", "--once", "1024"], {}),
        "rust-demo-off": ([demo, "--device", "cuda", "--once", "1024"], {"DISABLE_KERNEL_MAPPING": "1"}),
    }
    samples = {name: [] for name in cases}
    for r in range(rounds):
        names = list(cases)
        names = names[r % len(names):] + names[: r % len(names)]
        for name in names:
            argv, extra = cases[name]
            env = dict(os.environ, **extra)
            t = time.perf_counter()
            done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                sys.exit(f"{name} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
            samples[name].append(wall * 1e3)
    for name, v in samples.items():
        v.sort()
        print(f"{name:<15} median {statistics.median(v):8.1f} ms  (min {v[0]:.1f}, max {v[-1]:.1f}, {len(v)} runs)")
        print(f"RESULT python-firstcall case={name} median_ms={statistics.median(v):.1f} runs={len(v)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["percall"]:
        percall(sys.argv[2])
    elif sys.argv[1:2] == ["firstcall"]:
        firstcall(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 7)
    else:
        sys.exit(__doc__)
