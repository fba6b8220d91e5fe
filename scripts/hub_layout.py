#!/usr/bin/env python3
"""Write and check Kernel Hub variant directories (build/<variant>/...).

Standard library only. The digest and metadata.json follow what the Hub's
kernel-builder writes (see examples/kernels/cpp-cpu/LAYOUT.md):

  * digest: every regular file under the variant directory, keyed by its
    '/'-separated relative path, hashed with sha256 (or sha512) and encoded
    in standard, padded base64. metadata.json and metadata.json.sigstore at
    the top level, __pycache__ directories and *.pyc files are left out;
  * metadata.json: serde_json's pretty layout (2-space indent, no trailing
    newline), keys in kernel-builder's order, digest files sorted by path.

Commands:
  kernel-id       print "_<python name>_<backend>_<rev>"
  source-rev      print a 7-hex-digit revision derived from source files
  digest          print the digest object of a variant directory as JSON
  write-metadata  (re)write <variant>/metadata.json with a fresh digest
  verify          check a variant directory against its metadata.json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

BACKENDS = ("cann", "cpu", "cuda", "metal", "neuron", "rocm", "tpu", "xpu")
ALGORITHMS = ("sha256", "sha512")
TOP_LEVEL_EXCLUDED = ("metadata.json", "metadata.json.sigstore")
# Torch variants are abi3 Python extension modules: <id>.abi3.so.
LIBRARY_SUFFIXES = (".so", ".abi3.so", ".dylib", ".dll")


class LayoutError(Exception):
    """A problem with the inputs or the variant directory; the message says what."""


def python_name(name: str) -> str:
    return name.replace("-", "_")


def kernel_id(name: str, backend: str, rev: str) -> str:
    if backend not in BACKENDS:
        raise LayoutError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    ident = f"_{python_name(name)}_{backend}_{rev.replace('-', '_')}"
    if not ident.isidentifier():
        raise LayoutError(f"kernel id {ident!r} is not a valid Python identifier; check name and rev")
    return ident


def source_rev(root: Path, files: list[str]) -> str:
    """First 7 hex digits of a sha256 over (relative path, content) of each file, path-sorted."""
    entries = []
    for f in files:
        path = Path(f)
        if not path.is_absolute():
            path = Path.cwd() / path
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise LayoutError(f"{f} is not under {root}") from None
        entries.append((rel, path))
    outer = hashlib.sha256()
    for rel, path in sorted(entries):
        try:
            inner = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise LayoutError(f"cannot read source file {path}: {e.strerror}") from None
        outer.update(f"{rel}\0{inner}\n".encode())
    return outer.hexdigest()[:7]


def hash_variant(variant: Path, algorithm: str = "sha256") -> dict[str, str]:
    """Map of relative path -> base64 digest, as kernel-builder computes it."""
    if algorithm not in ALGORITHMS:
        raise LayoutError(f"unknown digest algorithm {algorithm!r}; expected sha256 or sha512")
    if not variant.is_dir():
        raise LayoutError(f"variant directory {variant} does not exist")
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(variant, followlinks=False):
        rel_dir = Path(dirpath).relative_to(variant)
        dirnames.sort()
        for fname in sorted(filenames):
            rel = (rel_dir / fname).as_posix() if rel_dir.parts else fname
            full = Path(dirpath) / fname
            if rel in TOP_LEVEL_EXCLUDED:
                continue
            if "__pycache__" in Path(rel).parts or os.path.splitext(fname)[1] == ".pyc":
                continue
            if full.is_symlink() and not full.exists():
                raise LayoutError(f"{full} is a dangling symlink")
            if not full.is_file():
                continue
            h = hashlib.new(algorithm)
            with open(full, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            files[rel] = base64.b64encode(h.digest()).decode("ascii")
    # Symlinked directories are listed in dirnames but, like upstream, not descended
    # (os.walk with followlinks=False) and not hashed.
    return dict(sorted(files.items()))


def dump_metadata(metadata: dict) -> bytes:
    """serde_json::to_writer_pretty layout: 2-space indent, UTF-8, no trailing newline."""
    return json.dumps(metadata, indent=2, ensure_ascii=False).encode("utf-8")


def split_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in re.split(r"[;,]", v) if p.strip())
    return out


def build_metadata(args: argparse.Namespace, variant: Path) -> dict:
    if args.backend not in BACKENDS:
        raise LayoutError(f"unknown backend {args.backend!r}; expected one of {', '.join(BACKENDS)}")
    if not args.id.isidentifier():
        raise LayoutError(f"id {args.id!r} is not a valid Python identifier")
    if args.version < 0:
        raise LayoutError(f"version must be a non-negative integer, got {args.version}")
    if not any((variant / (args.id + s)).is_file() for s in LIBRARY_SUFFIXES):
        raise LayoutError(
            f"no kernel library {args.id}.so/.abi3.so/.dylib/.dll in {variant}; build it before writing metadata"
        )
    archs = sorted(set(split_list(args.archs)))
    for a in archs:
        if not re.fullmatch(r"(\d+\.\d+[af]?(\+PTX)?|gfx[0-9a-z]+)", a):
            raise LayoutError(f"arch {a!r} is neither a CUDA capability like 9.0 / 9.0a / 9.0+PTX nor a gfx name")
    if archs and args.backend not in ("cuda", "rocm"):
        raise LayoutError(f"--archs only applies to cuda and rocm, not {args.backend}")

    metadata: dict = {
        "name": args.name,
        "id": args.id,
        "version": args.version,
        "license": args.license,
    }
    if args.upstream:
        metadata["upstream"] = args.upstream
    if args.source:
        metadata["source"] = args.source
    metadata["python-depends"] = split_list(args.python_depends)
    metadata["kernel-depends"] = []
    backend: dict = {"type": args.backend}
    if archs:
        backend["archs"] = archs
    metadata["backend"] = backend
    metadata["digest"] = {"algorithm": args.algorithm, "files": hash_variant(variant, args.algorithm)}
    return metadata


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".metadata.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def verify(variant: Path) -> list[str]:
    """Violations of the variant against its metadata.json, in upstream's order."""
    meta_path = variant / "metadata.json"
    try:
        metadata = json.loads(meta_path.read_bytes())
    except FileNotFoundError:
        raise LayoutError(f"{meta_path} does not exist") from None
    except ValueError as e:
        raise LayoutError(f"{meta_path} is not valid JSON: {e}") from None
    for key in ("name", "id", "version", "license", "python-depends", "backend"):
        if key not in metadata:
            raise LayoutError(f"{meta_path} lacks the required key {key!r}")
    digest = metadata.get("digest")
    if not isinstance(digest, dict) or not isinstance(digest.get("files"), dict):
        raise LayoutError(f"{meta_path} has no digest; rewrite it with `write-metadata`")
    algorithm = digest.get("algorithm")
    expected: dict[str, str] = digest["files"]
    actual = hash_variant(variant, algorithm)
    violations = []
    for path in sorted(expected):
        if path not in actual:
            violations.append(f"Missing file: {path}")
        elif actual[path] != expected[path]:
            violations.append(
                f"File hash mismatch for {path}: expected: {expected[path]}, got: {actual[path]}"
            )
    for path in sorted(actual):
        if path not in expected:
            violations.append(f"Unknown file: {path}")
    return violations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("kernel-id", help="print the kernel id")
    p.add_argument("--name", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--rev", required=True)

    p = sub.add_parser("source-rev", help="print a revision derived from source files")
    p.add_argument("--root", required=True, type=Path, help="paths are hashed relative to this directory")
    p.add_argument("files", nargs="+")

    p = sub.add_parser("digest", help="print the digest of a variant directory")
    p.add_argument("variant", type=Path)
    p.add_argument("--algorithm", default="sha256", choices=ALGORITHMS)

    p = sub.add_parser("write-metadata", help="write <variant>/metadata.json")
    p.add_argument("variant", type=Path)
    p.add_argument("--name", required=True, help="kernel name, e.g. activation")
    p.add_argument("--id", required=True, help="kernel id, the library's file stem")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--license", default="Apache-2.0")
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument("--archs", action="append", help="GPU archs, e.g. '8.0;9.0+PTX' (repeatable)")
    p.add_argument("--python-depends", action="append", help="repeatable or ';'-separated")
    p.add_argument("--upstream")
    p.add_argument("--source")
    p.add_argument("--algorithm", default="sha256", choices=ALGORITHMS)

    p = sub.add_parser("verify", help="check a variant directory against its metadata.json")
    p.add_argument("variant", type=Path)

    args = parser.parse_args(argv)
    try:
        if args.cmd == "kernel-id":
            print(kernel_id(args.name, args.backend, args.rev))
        elif args.cmd == "source-rev":
            print(source_rev(args.root, args.files))
        elif args.cmd == "digest":
            files = hash_variant(args.variant, args.algorithm)
            print(json.dumps({"algorithm": args.algorithm, "files": files}, indent=2))
        elif args.cmd == "write-metadata":
            metadata = build_metadata(args, args.variant)
            write_atomic(args.variant / "metadata.json", dump_metadata(metadata))
        elif args.cmd == "verify":
            violations = verify(args.variant)
            if violations:
                print(f"{args.variant}: kernel does not match the expected digest:", file=sys.stderr)
                for v in violations:
                    print(f"  {v}", file=sys.stderr)
                return 1
            print(f"{args.variant}: ok")
    except LayoutError as e:
        print(f"hub_layout: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
