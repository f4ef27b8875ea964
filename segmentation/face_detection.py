"""MTCNN face detection (facenet-pytorch 2.5.3, its shipped P/R/O-net weights) and the face crop.

Shared by the quality annotator (is there a face?), the segmentation stage (which face to
parse) and the embedded-model quality bench (detection rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from common.errors import PipelineError

CROP_SIZE = 224


@dataclass(frozen=True)
class FaceBox:
    """Largest detected face: (x1, y1, x2, y2) in the coordinates of the image given, and MTCNN's probability."""

    box: tuple[float, float, float, float]
    probability: float

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)


def create_mtcnn(device: str | torch.device = "cpu"):
    """MTCNN with the original's settings: all faces kept, min face 20, thresholds 0.6/0.7/0.7, factor 0.709."""
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:  # pragma: no cover - install problem
        raise PipelineError(f"facenet-pytorch is not importable ({exc}); run `make install`") from None
    return MTCNN(keep_all=True, min_face_size=20, thresholds=[0.6, 0.7, 0.7], factor=0.709,
                 post_process=False, device=torch.device(device))


def _upscale(image: np.ndarray, size: int | None) -> tuple[Image.Image, float]:
    pil = Image.fromarray(image)
    if size is None or max(image.shape[:2]) >= size:
        return pil, 1.0
    scale = size / max(image.shape[:2])
    new_size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return pil.resize(new_size, Image.BICUBIC), scale


def detect_largest_faces(mtcnn, images: list[np.ndarray], upscale_to: int | None = None,
                         batch_size: int = 32, progress: bool = False) -> list[FaceBox | None]:
    """For each HWC uint8 RGB image the largest face box (in that image's pixels), or None.

    Small images (the embedded profile's 64 px faces) are bicubically upscaled to `upscale_to`
    before detection, since MTCNN's pyramid is tuned for larger faces; boxes are scaled back.
    """
    results: list[FaceBox | None] = []
    for start in tqdm(range(0, len(images), batch_size), desc="face detection", unit="batch", disable=not progress):
        chunk = images[start:start + batch_size]
        prepared = [_upscale(img, upscale_to) for img in chunk]
        same_size = len({p.size for p, _ in prepared}) == 1
        if same_size:
            batch_boxes, batch_probs = mtcnn.detect([p for p, _ in prepared])
        else:
            pairs = [mtcnn.detect(p) for p, _ in prepared]
            batch_boxes, batch_probs = [b for b, _ in pairs], [q for _, q in pairs]
        for (_, scale), boxes, probs in zip(prepared, batch_boxes, batch_probs):
            if boxes is None or len(boxes) == 0:
                results.append(None)
                continue
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            best = int(np.argmax(areas))
            results.append(FaceBox(tuple(float(v) / scale for v in boxes[best]), float(probs[best])))
    return results


def enlarged_crop_box(box: tuple[float, float, float, float], width: int, height: int,
                      enlarge: float = 0.5) -> tuple[int, int, int, int]:
    """Grow the box by `enlarge` of its size (half on each side), clip to the image, truncate to int."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * enlarge / 2, (y2 - y1) * enlarge / 2
    x1, y1 = max(x1 - dx, 0.0), max(y1 - dy, 0.0)
    x2, y2 = min(x2 + dx, float(width)), min(y2 + dy, float(height))
    return int(x1), int(y1), int(x2), int(y2)


def crop_face(image: np.ndarray, box: tuple[float, float, float, float], size: int = CROP_SIZE,
              enlarge: float = 0.5) -> np.ndarray:
    """The enlarged face crop resized to size x size (bicubic), HWC uint8 RGB."""
    x1, y1, x2, y2 = enlarged_crop_box(box, image.shape[1], image.shape[0], enlarge)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty face box {box}")
    crop = Image.fromarray(image[y1:y2, x1:x2])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))
