"""Stage 1's generated images as stage 2 lists and batches them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.errors import PipelineError
from common.fileio import IMAGE_NAME


def list_generated_images(images_dir: Path) -> pd.DataFrame:
    """img_no and path of every stage-1 image, sorted by img_no."""
    if not images_dir.is_dir():
        raise PipelineError(f"{images_dir}: stage-1 folder not found; run run_original_generator.py first")
    rows = []
    for path in images_dir.iterdir():
        match = IMAGE_NAME.match(path.name)
        if match and path.is_file():
            rows.append((int(match.group(1)), path))
    if not rows:
        raise PipelineError(f"{images_dir}: no {{img_no:06d}}.png/.jpg images; run run_original_generator.py first")
    frame = pd.DataFrame(rows, columns=["img_no", "path"]).sort_values("img_no", kind="stable")
    duplicated = frame["img_no"].duplicated()
    if duplicated.any():
        img_no = int(frame.loc[duplicated, "img_no"].iloc[0])
        raise PipelineError(f"{images_dir}: image {img_no:06d} exists as both .png and .jpg; remove one")
    return frame.reset_index(drop=True)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
