"""Images whose geometric truth is known, for validating a face measurement before it is used as a label.

Each function returns a changed copy of a uint8 RGB face:
    rotate(image, degrees)                       the whole face turned in the image plane (roll changes by
                                                 `degrees`, clockwise positive like face_geometry.roll)
    stretch(image, centre, radius, factor)       the region around `centre` stretched vertically by `factor`
                                                 (> 1 opens an eye or a mouth, < 1 shuts it), smoothly
                                                 fading to no change at about `radius` px
    relight(image, gain, tint, gamma)            lighting and colour only: geometry unchanged

Warps are done at 4x the input size and box-filtered back, so that a 64 px face gets a sub-pixel change,
as a generator would draw it. `validation_table` runs a measurement over a ladder of each warp and
reports how it follows (bench/validate_face_geometry.py prints it; tests assert it).
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

SUPERSAMPLE = 4


def _up(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (w * SUPERSAMPLE, h * SUPERSAMPLE), interpolation=cv2.INTER_CUBIC)


def _down(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """The face rotated by `degrees` about the image centre (positive: clockwise on screen)."""
    big = _up(image)
    h, w = big.shape[:2]
    # cv2's positive angle turns counter-clockwise on screen (y down), hence the minus.
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -degrees, 1.0)
    out = cv2.warpAffine(big, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    return _down(out, image.shape[:2])


def stretch(image: np.ndarray, centre: tuple[float, float], radius: tuple[float, float], factor: float
            ) -> np.ndarray:
    """Vertical stretch by `factor` about `centre` (x, y in input pixels) inside an ellipse of `radius` (rx, ry).

    The displacement is (y - cy) * (factor - 1) * weight, weight = exp(-(dx/rx)^2 - (dy/ry)^2), so the
    region's centre stays put and its rim does not tear.
    """
    big = _up(image)
    h, w = big.shape[:2]
    s = SUPERSAMPLE
    cx, cy = (centre[0] + 0.5) * s - 0.5, (centre[1] + 0.5) * s - 0.5
    rx, ry = radius[0] * s, radius[1] * s
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Inverse map: an output pixel at y reads the input at cy + (y - cy) / (1 + (factor - 1) * weight).
    weight = np.exp(-((xx - cx) / rx) ** 2 - ((yy - cy) / ry) ** 2)
    map_y = cy + (yy - cy) / (1.0 + (factor - 1.0) * weight)
    out = cv2.remap(big, xx, map_y.astype(np.float32), interpolation=cv2.INTER_CUBIC,
                    borderMode=cv2.BORDER_REFLECT_101)
    return _down(out, image.shape[:2])


def relight(image: np.ndarray, gain: float = 1.0, tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
            gamma: float = 1.0) -> np.ndarray:
    """Lighting and colour only: out = 255 * ((image / 255) ** gamma) * gain * tint, clipped."""
    x = (image.astype(np.float64) / 255.0) ** gamma
    x = x * gain * np.asarray(tint, np.float64)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


# ---- the ladders --------------------------------------------------------------------------------------------

ROLL_STEPS = (-8.0, -4.0, 0.0, 4.0, 8.0)
STRETCH_STEPS = (0.6, 0.8, 1.0, 1.25, 1.5)
LIGHTING = {"darker x0.7": dict(gain=0.7), "brighter x1.3": dict(gain=1.3), "gamma 0.7": dict(gamma=0.7),
            "gamma 1.4": dict(gamma=1.4), "warm tint": dict(tint=(1.15, 1.0, 0.8)),
            "cool tint": dict(tint=(0.85, 1.0, 1.2))}


def eye_and_mouth_regions(points: np.ndarray) -> dict[str, list[tuple[tuple[float, float], tuple[float, float]]]]:
    """Warp regions (centre, radius) from 68 landmarks: both eyes, and the mouth."""
    regions = {}
    eyes = []
    for eye in (slice(36, 42), slice(42, 48)):
        p = points[eye]
        width = float(np.linalg.norm(p[0] - p[3]))
        eyes.append((tuple(p.mean(axis=0)), (0.75 * width, 0.6 * width)))
    regions["eye_opening"] = eyes
    mouth = points[48:60]
    width = float(np.linalg.norm(mouth[0] - mouth[6]))
    regions["mouth_opening"] = [(tuple(points[60:68].mean(axis=0)), (0.7 * width, 0.45 * width))]
    return regions


def warp_ladders(image: np.ndarray, points: np.ndarray) -> dict[str, list[tuple[float, np.ndarray]]]:
    """{measure name: [(known amount, warped image), ...]} for roll and the eye and mouth stretches."""
    regions = eye_and_mouth_regions(points)
    ladders = {"roll": [(d, rotate(image, d)) for d in ROLL_STEPS]}
    for name, places in regions.items():
        rungs = []
        for factor in STRETCH_STEPS:
            out = image
            for centre, radius in places:
                out = stretch(out, centre, radius, factor)
            rungs.append((factor, out))
        ladders[name] = rungs
    return ladders


def validation_table(faces: np.ndarray, geometry) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run `geometry` (a face_geometry.FaceGeometry) over warp ladders and lighting changes of `faces`.

    Returns (response, lighting):
      response: one row per (measure, amount): mean change of the measure from the unwarped face, and the
        fraction of faces whose measure rises strictly along the whole ladder (per measure, on every row);
      lighting: one row per (measure, lighting change): mean and 95th-percentile absolute change, and the
        same as a fraction of the measure's SD across the unwarped faces.
    """
    from segmentation.face_geometry import GEOMETRY_COLUMNS

    column = {name: GEOMETRY_COLUMNS.index(name) for name in GEOMETRY_COLUMNS}
    base = geometry.measure(faces)
    sd = np.nanstd(base, axis=0)
    response_rows, lighting_rows = [], []
    per_face: dict[str, list[np.ndarray]] = {}
    for face, base_row in zip(faces, base):
        points, ok = geometry.landmarks(face)
        if not ok or not np.isfinite(base_row).all():
            continue
        for name, rungs in warp_ladders(face, points).items():
            values = geometry.measure(np.stack([img for _, img in rungs]))[:, column[name]]
            per_face.setdefault(name, []).append(values)
    for name, runs in per_face.items():
        runs = np.asarray(runs)
        amounts = ROLL_STEPS if name == "roll" else STRETCH_STEPS
        middle = amounts.index(0.0 if name == "roll" else 1.0)
        monotone = float(np.mean(np.all(np.diff(runs, axis=1) > 0, axis=1)))
        for j, amount in enumerate(amounts):
            change = runs[:, j] - runs[:, middle]
            response_rows.append({"measure": name, "amount": amount, "mean_change": float(np.nanmean(change)),
                                  "sd_change": float(np.nanstd(change)), "monotone_fraction": monotone,
                                  "faces": len(runs)})
    for label, kwargs in LIGHTING.items():
        changed = geometry.measure(np.stack([relight(f, **kwargs) for f in faces]))
        delta = np.abs(changed - base)
        for name, k in column.items():
            d = delta[:, k][np.isfinite(delta[:, k])]
            lighting_rows.append({"measure": name, "change": label, "mean_abs": float(d.mean()) if len(d) else np.nan,
                                  "p95_abs": float(np.percentile(d, 95)) if len(d) else np.nan,
                                  "mean_abs_in_sd": float(d.mean() / sd[k]) if len(d) and sd[k] > 0 else np.nan})
    return pd.DataFrame(response_rows), pd.DataFrame(lighting_rows)
