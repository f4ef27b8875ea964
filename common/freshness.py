"""Is a result current, and what was it made from: the one implementation of every such check.

API (each stage builds its own record of what a result depends on and calls these):

* `digest(*parts, algorithm="sha256", length=16)` -> hex digest of the parts in order: bytes as they are, text as
  UTF-8, a numpy array or torch tensor by its raw bytes in C order, a DataFrame by its CSV text without the index.
* `checkpoint_digest(path)` -> digest of a weights file's contents (names, dtypes, shapes and values of its tensors,
  other values by repr), not of its bytes: torch.save writes a fresh serialization id into every file, so two saves
  of the same tensors differ byte for byte.
* `record_text(record, indent=None)` -> the record as JSON with sorted keys: compact (a fingerprint stored inside
  another file, e.g. VectorFind's shards) or indented and ending in a line end (a record file).
* `write_record(path, record, key=None)` / `read_record(path, key=None, fix=...)` -> a provenance record beside a
  result, written atomically; with `key`, one entry of a file that holds a record per key (stage 2's
  model_info.json: one per property). Reading a missing file (or key) gives None; a file that is not JSON is a
  one-line PipelineError naming it and `fix`.
* `what_differs(stored, expected, keys=None, missing_ok=False)` -> '' when the stored record matches the expected
  one, else one line naming what differs, e.g. "seed = 0, now 1 (and width_multiplier)". Records may be dicts or
  their `record_text`.
* `newer_than(result, inputs)` -> the result file exists and none of the inputs was modified after it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from common.errors import PipelineError
from common.fileio import atomic_write_text


def _as_bytes(part) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode()
    if isinstance(part, np.ndarray):
        return part.tobytes()
    if hasattr(part, "to_csv"):  # a pandas DataFrame
        return part.to_csv(index=False).encode()
    import torch

    if isinstance(part, torch.Tensor):  # through uint8, so dtypes numpy lacks (bfloat16) work too
        return part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    raise TypeError(f"cannot digest a {type(part).__name__}")


def digest(*parts, algorithm: str = "sha256", length: int | None = 16) -> str:
    hashed = hashlib.new(algorithm)
    for part in parts:
        hashed.update(_as_bytes(part))
    return hashed.hexdigest()[:length]


def _flatten(name: str, value, out: list) -> None:
    """The parts of checkpoint_digest: each entry's name, then a tensor's dtype and shape and its bytes, or another
    value's repr; dict keys sorted."""
    import torch

    out.append(name)
    if isinstance(value, torch.Tensor):
        out += [f"{value.dtype}{tuple(value.shape)}", value]
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            _flatten(f"{name}.{key}", value[key], out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(f"{name}[{i}]", item, out)
    else:
        out.append(repr(value))


def checkpoint_digest(path: str | Path) -> str:
    from common.checkpoints import read_weights

    parts: list = []
    _flatten("", read_weights(path), parts)
    return digest(*parts, algorithm="sha1")


def record_text(record: dict, indent: int | None = None) -> str:
    if indent is None:
        return json.dumps(record, sort_keys=True)
    return json.dumps(record, indent=indent, sort_keys=True) + "\n"


def read_record(path: str | Path, key: str | None = None, fix: str = "re-run with --retrain") -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PipelineError(f"{path}: not valid JSON; {fix}") from None
    if not isinstance(record, dict):
        raise PipelineError(f"{path}: not a JSON object; {fix}")
    return record if key is None else record.get(key)


def write_record(path: str | Path, record: dict, key: str | None = None) -> None:
    if key is not None:
        record = {**(read_record(path) or {}), key: record}
    atomic_write_text(path, record_text(record, indent=2))


def _parsed(record):
    if isinstance(record, str):
        try:
            parsed = json.loads(record)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return record


def what_differs(stored, expected, keys=None, missing_ok: bool = False) -> str:
    """Keys are compared in `keys` order (default: the expected record's); `missing_ok`: a key the stored record
    lacks (written before the key existed) is no difference. Text that is not a JSON object is compared whole."""
    stored_record, expected_record = _parsed(stored), _parsed(expected)
    if stored_record is None or expected_record is None:
        return "" if stored == expected else f"{stored!r}, now {expected!r}"
    changed = [key for key in (expected_record if keys is None else keys)
               if not (missing_ok and key not in stored_record) and stored_record.get(key) != expected_record.get(key)]
    if not changed:
        return ""
    first, more = changed[0], f" (and {', '.join(changed[1:])})" if changed[1:] else ""
    return f"{first} = {stored_record.get(first)!r}, now {expected_record.get(first)!r}{more}"


def newer_than(result: str | Path, inputs) -> bool:
    result = Path(result)
    if not result.is_file():
        return False
    inputs = [Path(p) for p in inputs]
    if not all(p.is_file() for p in inputs):
        return False
    return all(result.stat().st_mtime >= p.stat().st_mtime for p in inputs)
