"""Stage 1's generated images as stage 2 lists and batches them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.fileio import list_numbered_images


def list_generated_images(images_dir: Path) -> pd.DataFrame:
    """img_no and path of every stage-1 image, sorted by img_no."""
    images = list_numbered_images(images_dir, "stage-1", "run run_original_generator.py first")
    return pd.DataFrame({"img_no": list(images), "path": list(images.values())})


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
