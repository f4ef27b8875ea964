"""The one place checkpoint files are read and written.

API (small on purpose; every loader in the project goes through it):

* `read_weights(path, missing_hint="")` -> the object `torch.load(path, weights_only=True)` returns, on the CPU.
  A missing file, a corrupt file or a pickle that carries code (any global besides tensors) raises a one-line
  `PipelineError` naming the file and what to do; nothing in the file runs.
* `load_state_strict(module, state_dict, source)` -> strict `load_state_dict`; on a mismatch one `PipelineError`
  line names the missing, unexpected and wrong-shape keys (first three of each) and `source`.
* `save_weights(path, obj)` -> `torch.save` through a temp file then rename, so a killed writer leaves no half file.
  `skip_identical=True` leaves a file that already holds exactly `obj`'s tensors alone: torch.save writes different
  bytes for the same tensors each time, so re-exporting a finished model must not touch it (what a result was made
  from is fingerprinted by its tensors: common.freshness.checkpoint_digest).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn

from common.errors import PipelineError
from common.fileio import atomic_path


def read_weights(path: str | Path, missing_hint: str = ""):
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: checkpoint not found" + (f"; {missing_hint}" if missing_hint else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise PipelineError(f"{path}: refused to load, the file holds code or objects besides tensors "
                                f"({found.group(1)}); use a checkpoint from a trusted source") from None
        raise PipelineError(f"{path}: not a readable torch checkpoint (corrupt or not a weights file); "
                            f"download or export it again") from None
    except Exception as exc:  # corrupt zip, truncated file, not a torch file
        raise PipelineError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}); "
                            f"download or export it again") from None


def load_state_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                   if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        for kind, items in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", wrong_shape)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{kind}: {', '.join(items[:3])}{more}")
        raise PipelineError(f"{source}: layout does not match the model; " + "; ".join(parts)
                            + "; check the profile's architecture settings")
    module.load_state_dict(state_dict, strict=True)


def _same_content(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same_content(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.detach().cpu(), b)
    return type(a) is type(b) and not isinstance(a, (dict, torch.Tensor)) and a == b


def same_weights(path: str | Path, obj) -> bool:
    """Whether `path` is a weights file holding exactly `obj` (same keys in order, dtypes, shapes and values)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        existing = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable means "not this content"
        return False
    return _same_content(obj, existing)


def save_weights(path: str | Path, obj, skip_identical: bool = False) -> bool:
    """torch.save through a temporary file; a failed write (torch reports a full disk as a RuntimeError of its
    zip writer) is a one-line PipelineError and leaves no file behind. Returns False when `skip_identical` found
    the same content already there (nothing written)."""
    if skip_identical and same_weights(path, obj):
        return False
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as exc:  # torch's zip writer: what it reports when a write fails (objects fail as TypeError)
        raise PipelineError(f"{path}: could not write ({str(exc).splitlines()[0]}); free disk space or choose a "
                            f"writable --output-root, then run the same command again to resume") from None
    return True
