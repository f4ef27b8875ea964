"""Compare two output roots file by file: did two runs of the pipeline write the same results?

    python -m common.run_compare ROOT_A ROOT_B

Used by the kill-anywhere test (a run killed many times vs one that was not) and useful by hand (two machines, two
commits). Files are compared by content, not bytes where the bytes carry incidental differences: PNGs by decoded
pixels, CSVs and JSON with their timing fields left out (elapsed seconds, finish times, rates), checkpoints tensor by
tensor. Run bookkeeping (reports/, logs, the lock file) is not compared.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

SKIPPED_PARTS = ("reports",)
SKIPPED_SUFFIXES = (".log", ".lock", ".tmp")
# Fields that record when or how fast something ran, not what it produced.
TIMING = re.compile(r"(time|seconds|elapsed|finished_at|started|per_second|img_s|duration|_at$|^at$|speed|rate_s|"
                    r"ms_per|wall)", re.IGNORECASE)


def result_files(root: Path) -> list[str]:
    """Relative paths of the files a run wrote, bookkeeping left out."""
    out = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root)
        if rel.parts[0] in SKIPPED_PARTS or path.name.startswith(".") or path.suffix in SKIPPED_SUFFIXES:
            continue
        out.append(rel.as_posix())
    return sorted(out)


def _drop_timing(value, ignored: frozenset[str] = frozenset()):
    if isinstance(value, dict):
        return {k: _drop_timing(v, ignored) for k, v in value.items() if not TIMING.search(str(k)) and k not in ignored}
    if isinstance(value, list):
        return [_drop_timing(v, ignored) for v in value]
    return value


def _same_png(a: Path, b: Path) -> str | None:
    from PIL import Image

    with Image.open(a) as x, Image.open(b) as y:
        if x.size != y.size or x.mode != y.mode:
            return f"image {x.size} {x.mode} vs {y.size} {y.mode}"
        diff = np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16))
    return None if not diff.any() else f"pixels differ (max {int(diff.max())} levels, {float((diff > 0).mean()):.1%})"


def _same_csv(a: Path, b: Path) -> str | None:
    import pandas as pd

    x, y = pd.read_csv(a), pd.read_csv(b)
    keep = [c for c in x.columns if not TIMING.search(str(c))]
    if list(x.columns) != list(y.columns):
        return f"columns {list(x.columns)} vs {list(y.columns)}"
    if len(x) != len(y):
        return f"{len(x)} vs {len(y)} rows"
    x, y = x[keep], y[keep]
    if x.equals(y):
        return None
    cells = (x != y) & ~(x.isna() & y.isna())
    column = cells.any().idxmax()
    return f"{int(cells.to_numpy().sum())} cells differ (first in column {column!r})"


def _tensors(value, prefix=""):
    import torch

    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if not TIMING.search(str(key)):
                yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _same_checkpoint(a: Path, b: Path) -> str | None:
    import torch

    x = dict(_tensors(torch.load(a, map_location="cpu", weights_only=True)))
    y = dict(_tensors(torch.load(b, map_location="cpu", weights_only=True)))
    if x.keys() != y.keys():
        return f"entries differ: {sorted(set(x) ^ set(y))[:5]}"
    for key in x:
        u, v = x[key], y[key]
        if isinstance(u, torch.Tensor):
            if u.shape != v.shape or not torch.equal(u, v):
                delta = (u.double() - v.double()).abs().max().item() if u.shape == v.shape else float("nan")
                return f"tensor {key} differs (max |diff| {delta:.3g})"
        elif u != v:
            return f"value {key}: {u!r} vs {v!r}"
    return None


def _same_npz(a: Path, b: Path) -> str | None:
    with np.load(a) as x, np.load(b) as y:
        if sorted(x.files) != sorted(y.files):
            return f"arrays {sorted(x.files)} vs {sorted(y.files)}"
        for key in x.files:
            u, v = x[key], y[key]
            if not np.array_equal(u, v, equal_nan=u.dtype.kind in "fc" and v.dtype.kind in "fc"):
                return f"array {key} differs"
    return None


def _first_difference(x, y, where: str = "") -> str | None:
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(set(x) | set(y), key=str):
            if key not in x or key not in y:
                return f"{where}{key} only in one file"
            found = _first_difference(x[key], y[key], f"{where}{key}.")
            if found:
                return found
        return None
    return None if x == y else f"{where.rstrip('.')}: {str(x)[:60]!s} vs {str(y)[:60]!s}"


def _same_json(a: Path, b: Path, ignored: frozenset[str] = frozenset()) -> str | None:
    x, y = (_drop_timing(json.loads(p.read_text()), ignored) for p in (a, b))
    return _first_difference(x, y)


COMPARERS = {".png": _same_png, ".csv": _same_csv, ".pt": _same_checkpoint, ".pth": _same_checkpoint,
             ".npz": _same_npz, ".json": _same_json}


def compare_roots(a: Path, b: Path, ignored_keys: frozenset[str] = frozenset()) -> dict[str, str]:
    """{relative path: why it differs} over the union of both roots' result files (empty: the same results);
    `ignored_keys`: JSON keys left out besides the timing ones."""
    files_a, files_b = set(result_files(a)), set(result_files(b))
    out = {rel: f"only in {a}" for rel in files_a - files_b}
    out.update({rel: f"only in {b}" for rel in files_b - files_a})
    for rel in sorted(files_a & files_b):
        pa, pb = a / rel, b / rel
        compare = COMPARERS.get(pa.suffix)
        try:
            if pa.suffix == ".json":
                reason = _same_json(pa, pb, ignored_keys)
            else:
                reason = compare(pa, pb) if compare else (None if pa.read_bytes() == pb.read_bytes() else "bytes differ")
        except Exception as exc:  # a file one run left unreadable is a difference, not a crash of the comparison
            reason = f"could not compare: {type(exc).__name__}: {exc}"
        if reason:
            out[rel] = reason
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root_a", type=Path)
    parser.add_argument("root_b", type=Path)
    args = parser.parse_args()
    differences = compare_roots(args.root_a, args.root_b)
    for rel, reason in sorted(differences.items()):
        print(f"{rel}: {reason}")
    print(f"{len(result_files(args.root_a))} files compared, {len(differences)} differ")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
