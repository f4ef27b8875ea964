"""The keep rule (every property's bounds on its score) and the kept images copied to the filtered folder."""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from cnn.properties import PropertyRule
from common.fileio import IMAGE_NAME, atomic_path, load_image


def rule_passes(scores: pd.DataFrame, rule: PropertyRule) -> np.ndarray:
    """Images whose score satisfies this property's part of the keep rule (bounds inclusive)."""
    values = scores[f"{rule.name}_score"].to_numpy()
    ok = np.ones(len(values), bool)
    if rule.keep_min is not None:
        ok &= values >= rule.keep_min
    if rule.keep_max is not None:
        ok &= values <= rule.keep_max
    return ok


def keep_mask(scores: pd.DataFrame, rules: list[PropertyRule], labelled: np.ndarray | None = None) -> np.ndarray:
    """Every property's rule holds, and (when `labelled` is given) the image is not labelled."""
    kept = np.ones(len(scores), bool)
    for rule in rules:
        kept &= rule_passes(scores, rule)
    if labelled is not None:
        kept &= ~np.asarray(labelled, bool)
    return kept


def export_kept(paths: list[Path], filtered_dir: Path, link_mode: str, resolution: int | None = None) -> int:
    """Copy (or hard-link) the kept images unchanged; drop stale images of earlier runs. Every source is decoded and
    checked first (a truncated or wrong-size image stops the stage instead of replacing a good copy), and a copy is
    kept only when its bytes equal the source's."""
    filtered_dir.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in paths}
    for existing in filtered_dir.iterdir():
        if IMAGE_NAME.match(existing.name) and existing.name not in wanted:
            existing.unlink()
    written = 0
    for name, source in wanted.items():
        load_image(source, resolution)
        target = filtered_dir / name
        if target.is_file() and filecmp.cmp(target, source, shallow=False):
            continue
        target.unlink(missing_ok=True)
        if link_mode == "hardlink":
            try:
                os.link(source, target)
                written += 1
                continue
            except OSError:
                pass  # other file system: fall back to a copy
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        written += 1
    return written
