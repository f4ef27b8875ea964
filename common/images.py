"""Conversions between generator tensors and uint8 images, and PNG grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] floats in nominal [-1, 1] -> [N, H, W, C] uint8, as the original converts:
    (x + 1) * 255 / 2, + 0.5, clip to [0, 255], truncate (round half up with saturation)."""
    x = (images.detach().to("cpu", torch.float64) + 1.0) * (255.0 / 2.0) + 0.5
    return x.clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """[N, H, W, C] uint8 -> [N, C, H, W] float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def make_grid(images: np.ndarray, ncols: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile [N, H, W, C] uint8 images into one [rows*(H+pad)+pad, ...] uint8 image."""
    n, h, w, c = images.shape
    nrows = max(1, -(-n // ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def save_grid(images: np.ndarray, path: str | Path, ncols: int = 8) -> None:
    from common.fileio import save_image

    save_image(make_grid(images, ncols), path)
