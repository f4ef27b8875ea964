"""Geometric face measurements from 68 landmarks: eye opening, mouth opening, roll and yaw.

Why landmarks: at 64 px the parsed eye and mouth regions fall on a handful of integer pixel heights, and a
CNN trained on those labels learns lighting instead of geometry. A landmark regressor places its points
with sub-pixel precision and, being built on intensity differences, barely moves under a brightness or
colour change (bench/validate_face_geometry.py measures both on warped faces with a known answer).

The landmark model is dlib's 68-point shape predictor (an ensemble of regression trees trained on iBUG
300-W), whose file ships in the PyPI package `face-recognition-models`; dlib comes from the `dlib-bin`
wheel. Faces are upscaled to `size` px (bicubic) before the predictor runs. The predictor needs a face box:
a first pass on the box where generated faces sit, a second on the box placed from those landmarks (the
detector's box relative to its landmarks, measured on generated faces), then the landmarks are averaged
over a small grid of shifted and scaled boxes, which removes most of their dependence on the box. Each face
is measured as drawn and mirrored, and the two readings are averaged (roll and yaw change sign in the mirror):
on 150 generated faces the two readings agree at r 0.83 (eye opening), 0.91 (mouth), 0.81 (roll) and 0.93
(yaw), so the average is a markedly more repeatable label, and the predictor's small left/right bias cancels.

Measures (pure functions of the 68 points, in any pixel unit):
    eye_opening    mean over both eyes of the eyelid gap over the eye width (the eye aspect ratio)
    mouth_opening  inner-lip gap over inner mouth width (0 for a closed mouth)
    roll           angle of the line from the image-left eye centre to the image-right one, degrees,
                   positive when the image-right eye is lower (the head tilts clockwise)
    yaw            (|nose tip - image-left jaw end| - |nose tip - image-right jaw end|) / their sum:
                   0 for a frontal face, positive when the nose is nearer the image-right edge of the face
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.errors import PipelineError
from common.packages import packaged_file

GEOMETRY_COLUMNS = ("eye_opening", "mouth_opening", "roll", "yaw")
NUM_POINTS = 68
IMAGE_LEFT_EYE = slice(36, 42)    # iBUG 300-W indices: the subject's right eye, on the image's left
IMAGE_RIGHT_EYE = slice(42, 48)
INNER_MOUTH = slice(60, 68)
NOSE_TIP, JAW_IMAGE_LEFT, JAW_IMAGE_RIGHT = 30, 0, 16

# Where a generated (aligned) face's box lies, as fractions of the image: centre x, centre y, size.
DEFAULT_BOX = (0.486, 0.641, 0.70)
# dlib's detector box relative to the bounding box of its 68 landmarks (side s): centre offset (x, y) / s and
# size / s, the mean over 179 generated faces the detector found.
BOX_FROM_POINTS = (-0.01, -0.08, 1.06)
# Boxes the landmarks are averaged over: shifts (fractions of the box side) and scales.
JITTER_SHIFTS = (-0.03, 0.0, 0.03)
JITTER_SCALES = (0.95, 1.05)
# What mirroring the image does to each measure (eye and mouth opening stay, roll and yaw change sign).
MIRROR_SIGNS = np.array([1.0, 1.0, -1.0, -1.0])
NORMALISED_STD = 48.0   # grey levels: every image is brought to mean 128 and this SD before the predictor


def model_file(name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """A model file of the `face-recognition-models` package (found without importing it)."""
    return packaged_file("face_recognition_models", "face-recognition-models", f"models/{name}")


# ---- measures: pure functions of one (68, 2) point array ---------------------------------------------------

def _eye_aspect(eye: np.ndarray) -> float:
    width = float(np.linalg.norm(eye[0] - eye[3]))
    gap = float(np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / 2
    return gap / max(width, 1e-6)


def eye_opening(points: np.ndarray) -> float:
    return (_eye_aspect(points[IMAGE_LEFT_EYE]) + _eye_aspect(points[IMAGE_RIGHT_EYE])) / 2


def mouth_opening(points: np.ndarray) -> float:
    inner = points[INNER_MOUTH]
    width = float(np.linalg.norm(inner[0] - inner[4]))
    gap = float(sum(np.linalg.norm(inner[i] - inner[8 - i]) for i in (1, 2, 3))) / 3
    return gap / max(width, 1e-6)


def roll_degrees(points: np.ndarray) -> float:
    left, right = points[IMAGE_LEFT_EYE].mean(axis=0), points[IMAGE_RIGHT_EYE].mean(axis=0)
    return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))


def yaw_ratio(points: np.ndarray) -> float:
    a = float(np.linalg.norm(points[NOSE_TIP] - points[JAW_IMAGE_LEFT]))
    b = float(np.linalg.norm(points[NOSE_TIP] - points[JAW_IMAGE_RIGHT]))
    return (a - b) / max(a + b, 1e-6)


def geometry_from_points(points: np.ndarray) -> np.ndarray:
    """[4] float64 in GEOMETRY_COLUMNS order."""
    points = np.asarray(points, np.float64)
    if points.shape != (NUM_POINTS, 2):
        raise ValueError(f"expected ({NUM_POINTS}, 2) landmarks, got {points.shape}")
    return np.array([eye_opening(points), mouth_opening(points), roll_degrees(points), yaw_ratio(points)])


def box_from_points(points: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the face box the predictor expects around these landmarks."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = float((hi - lo).max())
    dx, dy, scale = BOX_FROM_POINTS
    return float((lo[0] + hi[0]) / 2 + dx * side), float((lo[1] + hi[1]) / 2 + dy * side), scale * side


def plausible(points: np.ndarray, box_side: float) -> bool:
    """Whether the landmarks look like a face in its box (eyes apart, mouth below the eyes, nose between)."""
    left, right = points[IMAGE_LEFT_EYE].mean(axis=0), points[IMAGE_RIGHT_EYE].mean(axis=0)
    eye_distance = float(np.linalg.norm(right - left))
    mouth = points[INNER_MOUTH].mean(axis=0)
    a, b = right - left, mouth - left
    down = float(a[0] * b[1] - a[1] * b[0]) / max(eye_distance, 1e-6)   # mouth's distance below the eye line
    return 0.15 < eye_distance / max(box_side, 1e-6) < 0.7 and down > 0.3 * eye_distance


# ---- the landmark model --------------------------------------------------------------------------------------

class FaceGeometry:
    """landmarks(image) -> (68, 2) points in the image's pixels; measure(images) -> [N, 4] GEOMETRY_COLUMNS.

    Images are uint8 RGB [H, W, 3] (any square-ish size; 64 px generator faces are the design case).
    A face whose landmarks are implausible gets NaN in every column.
    """

    def __init__(self, size: int = 256, jitter: bool = True, mirror_average: bool = True):
        try:
            import dlib
        except ImportError as exc:  # pragma: no cover - install problem
            raise PipelineError(f"dlib is not importable ({exc}); run `make install` (package dlib-bin)") from None
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(model_file()))
        self.size = size
        self.jitter = jitter
        self.mirror_average = mirror_average

    def _predict(self, gray: np.ndarray, box: tuple[float, float, float]) -> np.ndarray:
        cx, cy, side = box
        half = side / 2
        rect = self._dlib.rectangle(int(round(cx - half)), int(round(cy - half)),
                                    int(round(cx + half)), int(round(cy + half)))
        shape = self.predictor(gray, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

    def _gray(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 [H, W, 3] RGB image, got {image.shape} {image.dtype}")
        big = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_CUBIC)
        gray = cv2.cvtColor(big, cv2.COLOR_RGB2GRAY).astype(np.float32)
        # Contrast normalisation: a gain or an offset of the lighting does not reach the predictor.
        gray = (gray - gray.mean()) / max(float(gray.std()), 1.0) * NORMALISED_STD + 128.0
        return np.clip(np.round(gray), 0, 255).astype(np.uint8)

    def landmarks(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """The 68 points in the input image's pixel coordinates, and whether they look like a face."""
        gray = self._gray(image)
        fx, fy, fs = DEFAULT_BOX
        points = self._predict(gray, (fx * self.size, fy * self.size, fs * self.size))
        box = box_from_points(points)
        points = self._predict(gray, box)
        box = box_from_points(points)
        if self.jitter:
            cx, cy, side = box
            boxes = [(cx + sx * side, cy + sy * side, side) for sx in JITTER_SHIFTS for sy in JITTER_SHIFTS]
            boxes += [(cx, cy, side * s) for s in JITTER_SCALES]
            points = np.mean([self._predict(gray, b) for b in boxes], axis=0)
        ok = plausible(points, box[2])
        scale = np.array([image.shape[1], image.shape[0]], np.float64) / self.size
        return (points + 0.5) * scale - 0.5, ok

    def measure(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        """[N, H, W, 3] uint8 RGB -> [N, 4] float64 (GEOMETRY_COLUMNS; NaN rows where no plausible face)."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        out = np.full((len(images), len(GEOMETRY_COLUMNS)), np.nan)
        rows = range(len(images))
        if progress:
            from tqdm import tqdm

            rows = tqdm(rows, desc="landmarks", unit="face", mininterval=2.0)
        for i in rows:
            points, ok = self.landmarks(images[i])
            if not ok:
                continue
            values = geometry_from_points(points)
            if self.mirror_average:
                mirrored, ok = self.landmarks(np.ascontiguousarray(images[i][:, ::-1]))
                if not ok:
                    continue
                other = geometry_from_points(mirrored) * MIRROR_SIGNS
                values = (values + other) / 2
            out[i] = values
        return out


# ---- several processes -----------------------------------------------------------------------------------------

_WORKER_MODEL: FaceGeometry | None = None


def _start_worker() -> None:
    global _WORKER_MODEL
    cv2.setNumThreads(1)
    _WORKER_MODEL = FaceGeometry()


def _measure_in_worker(images: np.ndarray) -> np.ndarray:
    return _WORKER_MODEL.measure(images)


class GeometryPool:
    """FaceGeometry in `workers` spawned processes (the predictor is single-threaded Python + C++; one face
    takes ~20 ms): `with GeometryPool(2) as pool: pool.measure(images)`. One worker measures in this process.
    Results equal FaceGeometry().measure(images) exactly (each face is measured independently)."""

    def __init__(self, workers: int = 1):
        from common.workers import spawned_pool

        self.workers = max(1, int(workers))
        self._pool = spawned_pool(self.workers, _start_worker)
        self._local = FaceGeometry() if self._pool is None else None

    def measure(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        images = np.asarray(images)
        if self._pool is None or len(images) < 2 * self.workers:
            if self._local is None:
                self._local = FaceGeometry()
            return self._local.measure(images, progress)
        chunks = np.array_split(images, 4 * self.workers)
        return np.concatenate(list(self._pool.map(_measure_in_worker, chunks)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "GeometryPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
