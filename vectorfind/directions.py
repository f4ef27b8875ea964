"""W-space direction files and the editing API used at run time (stage 9) and by the app.

File format (the original's):
    vectorfind/v8/property_score_vectors/{eyes|mouth|pose}_change_w_vector_{group}.csv
    a pandas CSV with an index column and columns 0..511, exactly one row: the unit direction, float32.

Groups (the original's): one letter per property in GROUP_PROPERTIES order, 'h' if the score is
>= that property's median else 'l' -> 16 names 'hhhh' .. 'llll'.

Orientation: our vectors are written so that ADDING the vector INCREASES the property (the original's
vectors pointed towards smaller because of the SVM's alphabetical class order; run_vectorfind.py has a flag
to write that orientation instead). Callers therefore use positive weights for "more" (bigger eyes, more open
mouth, more pose) and no negation.

API:
    group_name(scores, medians) -> 'hlhl'        scores: one row of 8 CNN outputs (or an (N, 8) array -> list)
    save_direction(path, vector)                  atomic write of one direction
    load_directions(vectors_dir, group) -> {'eyes': v, 'mouth': v, 'pose': v}
    edit_w(w, directions, weights, num_layers, layers=None) -> wp [N, num_layers, 512]
        w: [512] or [N, 512] (numpy or torch); weights: {'eyes': a_e, ...} (scalars or per-row arrays);
        layers: None = all layers, or (first, last) inclusive layer range that gets the edit.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.errors import PipelineError
from common.fileio import atomic_write_csv, read_csv_checked

# Output order of the merged 8-output property CNN.
from property_score_cnn import PROPERTY_NAMES as SCORE_NAMES
TARGET_PROPERTIES = ("eyes", "mouth", "pose")
GROUP_PROPERTIES = ("hair_color", "hair_length", "background_mean", "hairstyle")
GROUP_NAMES = tuple("".join(letters) for letters in product("hl", repeat=len(GROUP_PROPERTIES)))
W_DIM = 512


def score_column(name: str) -> int:
    return SCORE_NAMES.index(name)


def group_name(scores, medians):
    """Group letters of one score row (8 CNN outputs) or a list of names for an (N, 8) array.

    `medians` maps each GROUP_PROPERTIES name to its median (a dict) or is a sequence in that order."""
    if isinstance(medians, dict):
        medians = [medians[p] for p in GROUP_PROPERTIES]
    medians = np.asarray(medians, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    single = scores.ndim == 1
    rows = scores[None] if single else scores
    if rows.shape[1] != len(SCORE_NAMES):
        raise PipelineError(f"group_name needs {len(SCORE_NAMES)} scores per row ({', '.join(SCORE_NAMES)}), "
                            f"got {rows.shape[1]}")
    high = rows[:, [score_column(p) for p in GROUP_PROPERTIES]] >= medians
    names = ["".join("h" if h else "l" for h in row) for row in high]
    return names[0] if single else names


def direction_path(vectors_dir: str | Path, prop: str, group: str) -> Path:
    return Path(vectors_dir) / f"{prop}_change_w_vector_{group}.csv"


def save_direction(path: str | Path, vector) -> None:
    vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    atomic_write_csv(pd.DataFrame(vector), path)


def read_direction(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"direction file {path} not found: run run_vectorfind.py (stage 8) first")
    frame = read_csv_checked(path, "re-run run_vectorfind.py --force (stage 8)", index_col=0)
    columns = [str(c) for c in frame.columns] == [str(i) for i in range(W_DIM)]  # a renamed one is damage
    try:
        vector = frame.iloc[0].to_numpy(np.float32) if frame.shape == (1, W_DIM) and columns else None
    except ValueError:
        vector = None
    if vector is None or not np.isfinite(vector).all():
        found = ("non-numbers or NaN" if columns else "other column names") if frame.shape == (1, W_DIM) else \
            f"shape {frame.shape}"
        raise PipelineError(f"{path}: expected one row of {W_DIM} finite numbers (columns 0..{W_DIM - 1}), "
                            f"got {found}; re-run run_vectorfind.py --force (stage 8)")
    return vector


def load_directions(vectors_dir: str | Path, group: str) -> dict[str, np.ndarray]:
    if group not in GROUP_NAMES:
        raise PipelineError(f"unknown group {group!r}: expected one of {', '.join(GROUP_NAMES)}")
    return {prop: read_direction(direction_path(vectors_dir, prop, group)) for prop in TARGET_PROPERTIES}


def edit_w(w, directions: dict, weights: dict, num_layers: int, layers: tuple[int, int] | None = None):
    """wp = w broadcast to num_layers plus sum_p weights[p] * directions[p] on all layers or layers[0]..layers[1].

    Returns the same kind (numpy/torch) as w; a single w [512] gives wp [1, num_layers, 512]."""
    is_torch = isinstance(w, torch.Tensor)
    base = w if is_torch else torch.from_numpy(np.asarray(w, dtype=np.float32))
    if base.ndim == 1:
        base = base[None]
    offset = torch.zeros_like(base)
    for prop, weight in weights.items():
        if prop not in directions:
            raise PipelineError(f"edit_w: no direction for {prop!r} (have {', '.join(directions)})")
        vector = torch.as_tensor(np.asarray(directions[prop], dtype=np.float32), device=base.device, dtype=base.dtype)
        weight = torch.as_tensor(weight, device=base.device, dtype=base.dtype).reshape(-1, 1)
        offset = offset + weight * vector
    wp = base[:, None, :].repeat(1, num_layers, 1)
    mask = torch.zeros(1, num_layers, 1, device=base.device, dtype=base.dtype)
    first, last = (0, num_layers - 1) if layers is None else layers
    if not 0 <= first <= last < num_layers:
        raise PipelineError(f"edit layer range {first}-{last} is outside 0-{num_layers - 1}")
    mask[:, first:last + 1] = 1
    wp = wp + mask * offset[:, None, :]
    return wp if is_torch else wp.numpy()
