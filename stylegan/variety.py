"""How varied and how sharp a generator's faces are: the figures of the variety bench and of fine-tuning's monitor.

Pure functions of a batch of uint8 RGB images (NHWC numpy, or NCHW uint8 torch as `generate_uint8` returns):

* `sharpness(images)`: the median over faces of the variance of the Laplacian of the grey image (0-255 scale,
  OpenCV's 3x3 four-neighbour kernel); a blurred face scores lower, a flat image 0;
* `pixel_diversity(images, seed)`: the mean absolute difference (in [0, 1]) between the two images of random
  pairs of different faces; identical images give 0, a collapsed generator scores far below its teacher;
* `variety_figures(images, geometry)`: both of them, plus the standard deviation across faces of each geometric
  measure of `segmentation/face_geometry.py` (eye opening, mouth opening, roll in degrees, yaw) over the faces
  the landmark model found, and the fraction it found. `geometry` is an object with `measure(images_nhwc)`
  returning [N, 4] in GEOMETRY_COLUMNS order (NaN rows where no face), an already measured [N, 4] array, or None
  (no geometric figures).
"""

from __future__ import annotations

import cv2
import numpy as np

GEOMETRY_COLUMNS = ("eye_opening", "mouth_opening", "roll", "yaw")  # segmentation/face_geometry.py's order
SD_KEYS = tuple(f"{name}_sd" for name in GEOMETRY_COLUMNS)
# What fine-tuning's monitor and the bench report, in table order.
FIGURE_KEYS = (*SD_KEYS, "sharpness", "pixel_diversity", "geometry_found")


def as_nhwc_uint8(images) -> np.ndarray:
    """[N, H, W, 3] uint8 numpy from NHWC numpy or an NCHW (3 channels) uint8 torch tensor / array."""
    if hasattr(images, "detach"):  # torch
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images [N, H, W, 3] or [N, 3, H, W], got shape {images.shape}")
    if images.shape[-1] != 3 and images.shape[1] == 3:
        images = images.transpose(0, 2, 3, 1)
    if images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB images, got shape {images.shape} {images.dtype}")
    return np.ascontiguousarray(images)


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the Laplacian of one HWC uint8 RGB image's grey version (0-255 scale)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def sharpness(images) -> float:
    """Median over the faces of the variance of the Laplacian (higher: sharper)."""
    images = as_nhwc_uint8(images)
    if not len(images):
        return float("nan")
    return float(np.median([laplacian_variance(image) for image in images]))


def pixel_diversity(images, seed: int = 0, pairs: int = 5000) -> float:
    """Mean absolute pixel difference, in [0, 1], over `pairs` random pairs of two different faces."""
    images = as_nhwc_uint8(images)
    if len(images) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(images), pairs)
    b = (a + rng.integers(1, len(images), pairs)) % len(images)  # never the same face twice
    total = 0.0
    for start in range(0, pairs, 500):  # chunks: 5,000 pairs of 64 px faces would be 250 MB at once
        ia, ib = a[start:start + 500], b[start:start + 500]
        total += float(np.abs(images[ia].astype(np.int16) - images[ib].astype(np.int16)).mean(axis=(1, 2, 3)).sum())
    return total / pairs / 255.0


def geometry_sds(measured: np.ndarray) -> dict[str, float]:
    """SD across faces (ddof 1) of each GEOMETRY_COLUMNS measure over the rows without NaN, and that row fraction."""
    measured = np.asarray(measured, np.float64)
    if measured.ndim != 2 or measured.shape[1] != len(GEOMETRY_COLUMNS):
        raise ValueError(f"expected [N, {len(GEOMETRY_COLUMNS)}] geometry, got shape {measured.shape}")
    found = ~np.isnan(measured).any(axis=1)
    rows = measured[found]
    out = {key: float(rows[:, k].std(ddof=1)) if len(rows) >= 2 else float("nan") for k, key in enumerate(SD_KEYS)}
    out["geometry_found"] = float(found.mean()) if len(measured) else float("nan")
    return out


def variety_figures(images, geometry=None, seed: int = 0, pairs: int = 5000) -> dict[str, float]:
    """FIGURE_KEYS of a batch of faces (the geometric ones only when `geometry` is given)."""
    images = as_nhwc_uint8(images)
    out: dict[str, float] = {}
    if geometry is not None:
        measured = geometry if isinstance(geometry, np.ndarray) else geometry.measure(images)
        if len(measured) != len(images):
            raise ValueError(f"geometry has {len(measured)} rows for {len(images)} images")
        out.update(geometry_sds(measured))
    out["sharpness"] = sharpness(images)
    out["pixel_diversity"] = pixel_diversity(images, seed, pairs)
    return {key: out[key] for key in FIGURE_KEYS if key in out}
