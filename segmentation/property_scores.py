"""Property scores from a face-parsing class map and its face crop (stage 4): pure numpy functions.

Inputs are the 224x224 class map `class_map` (uint8, row y, column x, classes 0..10 as in the
segmentation stage) and the 224x224x3 uint8 face crop `face`. A pixel's colour value is the mean
of its three channels. Row/column ranges are half-open, as in the original's rules.

Three algorithms:
* v1 - the original first version, except that colours come from the face crop (the original read
  them from the full image resized to 224 px, which does not line up with the class map);
* v2 - the version everything later uses, with guards for empty classes and a zero division;
* hairstyle - curliness of the hair below the eyes, testing whole 4x4 blocks for hair.

No function here reads files, prints, or keeps state; the stage runner does the I/O.
"""

from __future__ import annotations

import cv2
import numpy as np

MAP_SIZE = 224
NUM_CLASSES = 11
BACKGROUND, FACE_SKIN, LEFT_BROW, RIGHT_BROW, LEFT_EYE, RIGHT_EYE, NOSE, UPPER_LIP, INNER_MOUTH, LOWER_LIP, HAIR = \
    range(NUM_CLASSES)

# Eye windows: the left eye (class 4) is looked for in the left 168 columns, the right eye (class 5)
# in the right 168 columns; both in rows [56, 168). v1 scans only the first 84 rows of a window.
EYE_ROWS = (56, 168)
LEFT_EYE_COLS = (0, 168)
RIGHT_EYE_COLS = (56, 224)
V1_EYE_SCAN_ROWS = 84

BACKGROUND_ROWS = (0, 112)
BACKGROUND_TRIM = 0.05
BACKGROUND_WHEN_NONE = 192.0
HAIR_COLOR_TRIM = 0.1
HAIR_COLOR_WHEN_NONE = 127.5
HAIR_LENGTH_V2_FIRST_ROW = 56
HAIR_LENGTH_V2_MIN_PIXELS = 20
HAIR_LENGTH_V2_EDGE_OFFSET = 10

HAIRSTYLE_BLOCK = 4
HAIRSTYLE_NEIGHBOUR_OFFSET = 8
HAIRSTYLE_ANCHOR_ROWS = (112, 213)
HAIRSTYLE_ANCHOR_COLS = (8, 213)
HAIRSTYLE_DENOMINATOR_OFFSET = 5.0
HAIRSTYLE_WHEN_NONE = 0.45

V1_V2_COLUMNS = ("eyes_score", "hair_color_score", "hair_length_score", "mouth_score", "pose_score",
                 "background_mean_score", "background_std_score")
SCORE_COLUMNS = {"v1": V1_V2_COLUMNS, "v2": V1_V2_COLUMNS, "hairstyle": ("hairstyle_score",)}
ALGORITHMS = tuple(SCORE_COLUMNS)


# ---------------------------------------------------------------------------------------------
# small helpers

def pixel_brightness(face: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] float64 mean of the three channels."""
    return face.astype(np.float64).sum(axis=2) / 3.0


def _row_extent(mask: np.ndarray) -> int:
    """Last minus first index of the rows of a 2-D mask that contain a True; 0 if none do."""
    rows = np.flatnonzero(mask.any(axis=1))
    return int(rows[-1] - rows[0]) if rows.size else 0


def _eye_window(class_map: np.ndarray, eye_class: int, cols: tuple[int, int], num_rows: int) -> np.ndarray:
    top = EYE_ROWS[0]
    return class_map[top:top + num_rows, cols[0]:cols[1]] == eye_class


def _eye_pixels(class_map: np.ndarray, eye_class: int, cols: tuple[int, int]) -> np.ndarray:
    """Absolute (y, x) coordinates of the eye's pixels inside its window, in row-major order."""
    window = _eye_window(class_map, eye_class, cols, EYE_ROWS[1] - EYE_ROWS[0])
    return np.argwhere(window) + np.array([EYE_ROWS[0], cols[0]])


def trimmed_values(values: np.ndarray, fraction: float) -> np.ndarray:
    """Sorted values with the lowest and highest `fraction` dropped: slice [int(f*n), int((1-f)*n))."""
    values = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = values.size
    # Written as the original computes the bounds (float product, truncated), so the same pixels drop.
    return values[int(fraction * n):int((1.0 - fraction) * n)]


# ---------------------------------------------------------------------------------------------
# eyes and pose

def eyes_score_v1(class_map: np.ndarray) -> float:
    """Mean over the two eyes of (last - first) row holding the eye, in the first 84 rows of its window."""
    left = _row_extent(_eye_window(class_map, LEFT_EYE, LEFT_EYE_COLS, V1_EYE_SCAN_ROWS))
    right = _row_extent(_eye_window(class_map, RIGHT_EYE, RIGHT_EYE_COLS, V1_EYE_SCAN_ROWS))
    return (left + right) / 2.0


def farthest_pair(points: np.ndarray) -> tuple[int, int]:
    """Indices (i < j) of the two points (rows of an [n, 2] integer array, n >= 2) farthest apart.

    Both ends of a farthest pair are vertices of the convex hull (squared distance to a fixed point
    is strictly convex, so it peaks at a vertex), hence only hull vertices are paired: the same
    answer as the exhaustive O(n^2) search, in O(n log n + h^2) with h hull vertices (a few dozen
    for a pixel blob). Among equally distant pairs the first in (i, j) order wins, which is what a
    double loop over the points with a strict '>' picks.
    """
    points = np.asarray(points)
    if len(points) < 2:
        raise ValueError("farthest_pair needs at least two points")
    if len(points) <= 3:
        candidates = np.arange(len(points))
    else:
        hull = cv2.convexHull(points.astype(np.int32).reshape(-1, 1, 2), returnPoints=False)
        candidates = np.unique(hull.ravel())  # sorted, so (k, l) order below is (i, j) order
        if candidates.size < 2:
            candidates = np.arange(len(points))
    coords = points[candidates].astype(np.int64)
    diff = coords[:, None, :] - coords[None, :, :]
    squared = (diff ** 2).sum(axis=2)
    squared = np.triu(squared, k=1)  # integer distances: ties are exact
    k, l = np.argwhere(squared == squared.max())[0]
    return int(candidates[k]), int(candidates[l])


def _eye_score_v2(class_map: np.ndarray, eye_class: int, cols: tuple[int, int]) -> tuple[float, np.ndarray]:
    window = _eye_window(class_map, eye_class, cols, EYE_ROWS[1] - EYE_ROWS[0])
    present = window.any(axis=0)
    if not present.any():
        return 0.0, np.empty((0, 2), dtype=np.int64)
    height = window.shape[0]
    first = window.argmax(axis=0)
    last = height - 1 - window[::-1].argmax(axis=0)
    tallest_column = int(np.where(present, last - first, 0).max())
    pixels = _eye_pixels(class_map, eye_class, cols)
    cos = 1.0
    if len(pixels) >= 2:
        i, j = farthest_pair(pixels)
        dy, dx = (pixels[i] - pixels[j]).astype(np.float64)
        cos = abs(dx) / float(np.hypot(dx, dy))
    return float(tallest_column * cos), pixels


def eyes_and_pose_v2(class_map: np.ndarray) -> tuple[float, float]:
    """(eyes, pose) of v2.

    eyes: per eye, the tallest column extent in its window times cos of the tilt of its farthest
    pixel pair; the larger of the two eyes. pose: slope (dy / dx) between the two eye centroids;
    0 if an eye is missing, and 0 (guard added here; the original divides by zero) when the two
    centroids have the same x.
    """
    left_score, left_pixels = _eye_score_v2(class_map, LEFT_EYE, LEFT_EYE_COLS)
    right_score, right_pixels = _eye_score_v2(class_map, RIGHT_EYE, RIGHT_EYE_COLS)
    eyes = max(left_score, right_score)
    if len(left_pixels) == 0 or len(right_pixels) == 0:
        return eyes, 0.0
    n_left, n_right = len(left_pixels), len(right_pixels)
    sum_left, sum_right = left_pixels.sum(axis=0), right_pixels.sum(axis=0)
    # Centroid x equal <=> sum_r / n_r == sum_l / n_l; compared in integers so "equal" is exact.
    if int(sum_right[1]) * n_left == int(sum_left[1]) * n_right:
        return eyes, 0.0
    mean_left, mean_right = sum_left / n_left, sum_right / n_right
    pose = (mean_right[0] - mean_left[0]) / (mean_right[1] - mean_left[1])
    return eyes, float(pose)


def pose_score_v1(class_map: np.ndarray) -> float:
    """Minus the Pearson correlation of x and y over the nose pixels; 0 if it is undefined
    (fewer than two nose pixels, or all in one row or one column)."""
    ys, xs = np.nonzero(class_map == NOSE)
    if ys.size < 2:
        return 0.0
    x = xs - xs.mean()
    y = ys - ys.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    if denominator == 0:
        return 0.0
    return float(-(x * y).sum() / denominator)


# ---------------------------------------------------------------------------------------------
# hair

def hair_color_v1(class_map: np.ndarray, brightness: np.ndarray) -> float:
    """Median colour value of the hair pixels; 127.5 (v2's fallback) if there is no hair."""
    values = brightness[class_map == HAIR]
    return float(np.median(values)) if values.size else HAIR_COLOR_WHEN_NONE


def hair_color_v2(class_map: np.ndarray, brightness: np.ndarray) -> float:
    """Mean colour value of the hair pixels after dropping the darkest and brightest 10 %; 127.5 if none is left."""
    kept = trimmed_values(brightness[class_map == HAIR], HAIR_COLOR_TRIM)
    return float(kept.mean()) if kept.size else HAIR_COLOR_WHEN_NONE


def hair_length_v1(class_map: np.ndarray) -> float:
    """Last row holding hair (0 if none); if that is the bottom row, plus half its hair count
    (left half + right half, halved)."""
    hair = class_map == HAIR
    rows = np.flatnonzero(hair.any(axis=1))
    if not rows.size:
        return 0.0
    last = int(rows[-1])
    score = float(last)
    if last == class_map.shape[0] - 1:
        half = class_map.shape[1] // 2
        score += (int(hair[last, :half].sum()) + int(hair[last, half:].sum())) / 2.0
    return score


def hair_length_v2(class_map: np.ndarray) -> float:
    """Rows in [56, 224) holding at least 20 hair pixels; if the bottom row is one of them, plus
    max(left-half count - 10, 0)/2 + max(right-half count - 10, 0)/2."""
    hair = class_map == HAIR
    counts = hair.sum(axis=1)
    score = float((counts[HAIR_LENGTH_V2_FIRST_ROW:] >= HAIR_LENGTH_V2_MIN_PIXELS).sum())
    bottom = class_map.shape[0] - 1
    if counts[bottom] >= HAIR_LENGTH_V2_MIN_PIXELS:
        half = class_map.shape[1] // 2
        left, right = int(hair[bottom, :half].sum()), int(hair[bottom, half:].sum())
        score += max(left - HAIR_LENGTH_V2_EDGE_OFFSET, 0) / 2.0 + max(right - HAIR_LENGTH_V2_EDGE_OFFSET, 0) / 2.0
    return score


def _block_sums(values: np.ndarray, size: int) -> np.ndarray:
    """out[y, x] = sum of values[y:y+size, x:x+size] (integral image), shape (H-size+1, W-size+1)."""
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = values.astype(np.int64).cumsum(axis=0).cumsum(axis=1)
    return (integral[size:, size:] - integral[:-size, size:]
            - integral[size:, :-size] + integral[:-size, :-size])


def hairstyle_ratios(class_map: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Ratio vertical / (horizontal + 5) for every qualifying anchor (a 1-D array, anchor row-major).

    Anchors (y, x) with y in [112, 213), x in [8, 213); the 4x4 block at the anchor and its three
    neighbours (8 px below, 8 px left, 8 px right) must be hair in all 16 pixels each. (The
    original tests 8 probe pixels instead, one of them outside its block; the author's stated rule,
    whole blocks, is used here.) m = mean of a block's 48 channel values; vertical = |m - m_below|,
    horizontal = max(|m - m_left|, |m - m_right|).
    """
    size, offset = HAIRSTYLE_BLOCK, HAIRSTYLE_NEIGHBOUR_OFFSET
    hair_count = _block_sums(class_map == HAIR, size)
    full = hair_count == size * size
    channel_sum = _block_sums(face.astype(np.int64).sum(axis=2), size)
    block_mean = channel_sum / float(size * size * face.shape[2])

    (y0, y1), (x0, x1) = HAIRSTYLE_ANCHOR_ROWS, HAIRSTYLE_ANCHOR_COLS

    def shifted(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
        return array[y0 + dy:y1 + dy, x0 + dx:x1 + dx]

    qualifies = (shifted(full, 0, 0) & shifted(full, offset, 0)
                 & shifted(full, 0, -offset) & shifted(full, 0, offset))
    m = shifted(block_mean, 0, 0)
    vertical = np.abs(m - shifted(block_mean, offset, 0))
    horizontal = np.maximum(np.abs(m - shifted(block_mean, 0, -offset)), np.abs(m - shifted(block_mean, 0, offset)))
    ratio = vertical / (horizontal + HAIRSTYLE_DENOMINATOR_OFFSET)
    return ratio[qualifies]


def hairstyle_score(class_map: np.ndarray, face: np.ndarray) -> float:
    """Mean hairstyle ratio over the qualifying anchors (larger = curlier); 0.45 if none qualifies."""
    ratios = hairstyle_ratios(class_map, face)
    return float(ratios.mean()) if ratios.size else HAIRSTYLE_WHEN_NONE


# ---------------------------------------------------------------------------------------------
# mouth and background

def mouth_score_v1(class_map: np.ndarray) -> float:
    """Row extent of the lips (classes 7 and 9) plus row extent of the inner mouth (class 8)."""
    lips = (class_map == UPPER_LIP) | (class_map == LOWER_LIP)
    return float(_row_extent(lips) + _row_extent(class_map == INNER_MOUTH))


def mouth_score_v2(class_map: np.ndarray) -> float:
    """Inner-mouth pixels / (lip + inner-mouth pixels); 0 if there are none."""
    inner = int((class_map == INNER_MOUTH).sum())
    total = inner + int((class_map == UPPER_LIP).sum()) + int((class_map == LOWER_LIP).sum())
    return inner / total if total else 0.0


def background_scores(class_map: np.ndarray, brightness: np.ndarray) -> tuple[float, float]:
    """(mean, population std) of the background colour values in rows [0, 112), darkest and
    brightest 5 % dropped. No pixel -> (192, 0); one pixel, or one value left -> (that value, 0)."""
    top, bottom = BACKGROUND_ROWS
    values = brightness[top:bottom][class_map[top:bottom] == BACKGROUND]
    if values.size == 0:
        return BACKGROUND_WHEN_NONE, 0.0
    if values.size == 1:
        return float(values[0]), 0.0
    kept = trimmed_values(values, BACKGROUND_TRIM)  # never empty for n >= 2
    if kept.size == 1:
        return float(kept[0]), 0.0
    return float(kept.mean()), float(kept.std())


# ---------------------------------------------------------------------------------------------
# per-image records and normalisation

def property_scores_v1(class_map: np.ndarray, face: np.ndarray) -> dict[str, float]:
    brightness = pixel_brightness(face)
    background_mean, background_std = background_scores(class_map, brightness)
    return {"eyes_score": eyes_score_v1(class_map),
            "hair_color_score": hair_color_v1(class_map, brightness),
            "hair_length_score": hair_length_v1(class_map),
            "mouth_score": mouth_score_v1(class_map),
            "pose_score": pose_score_v1(class_map),
            "background_mean_score": background_mean,
            "background_std_score": background_std}


def property_scores_v2(class_map: np.ndarray, face: np.ndarray) -> dict[str, float]:
    brightness = pixel_brightness(face)
    eyes, pose = eyes_and_pose_v2(class_map)
    background_mean, background_std = background_scores(class_map, brightness)
    return {"eyes_score": eyes,
            "hair_color_score": hair_color_v2(class_map, brightness),
            "hair_length_score": hair_length_v2(class_map),
            "mouth_score": mouth_score_v2(class_map),
            "pose_score": pose,
            "background_mean_score": background_mean,
            "background_std_score": background_std}


def property_scores_hairstyle(class_map: np.ndarray, face: np.ndarray) -> dict[str, float]:
    return {"hairstyle_score": hairstyle_score(class_map, face)}


SCORERS = {"v1": property_scores_v1, "v2": property_scores_v2, "hairstyle": property_scores_hairstyle}


def compute_scores(algorithm: str, class_map: np.ndarray, face: np.ndarray) -> dict[str, float]:
    """Raw (unnormalised) scores of one image, keyed by the CSV column names of `algorithm`."""
    try:
        scorer = SCORERS[algorithm]
    except KeyError:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}") from None
    return scorer(class_map, face)


def normalise_column(values: np.ndarray) -> np.ndarray:
    """z-score with the sample std (ddof=1), rounded to 4 decimals.

    A column with no spread (all values equal up to float noise, or a single row, where the sample
    std is undefined) becomes all zeros instead of NaN or noise-amplified values.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return np.zeros_like(values)
    std = values.std(ddof=1)
    scale = max(1.0, float(np.abs(values).max()))
    if not np.isfinite(std) or std <= 1e-12 * scale:
        return np.zeros_like(values)
    return np.round((values - values.mean()) / std, 4) + 0.0  # + 0.0 turns -0.0 into 0.0
