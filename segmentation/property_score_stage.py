"""Stage 4 runner: read the segmentation stage's class maps and face crops, score them, write the CSV.

The scoring itself lives in `segmentation.property_scores` (pure functions); this module is the I/O
edge: it finds the `parsing_{no:06d}.png` / `face_{no:06d}.png` pairs, checks them, and writes the
table in the original's layout (an unnamed pandas index column, `img_no`, `img_path`, the score
columns). Scoring is cheap, so every run recomputes all rows; the CSV is replaced atomically, so a
killed run leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from common.artifacts import FACES, GEOMETRY_FILE, SCORE_FILES
from common.config import check_choices, dump_config
from common.paths import repo_relative, resolve_repo_path
from common.errors import PipelineError
from common.fileio import atomic_write_csv, load_image
from segmentation.property_scores import ALGORITHMS, MAP_SIZE, NUM_CLASSES, SCORE_COLUMNS, compute_scores, \
    normalise_column

GEOMETRY_SOURCES = ("segmentation", "landmarks")
POSE_MEASURES = ("yaw", "roll")
# The score columns that geometry = "landmarks" takes from the landmark measures (v2 only).
LANDMARK_SCORES = {"eyes_score": "eye_opening", "mouth_score": "mouth_opening", "pose_score": None}
PARSING_PATTERN = re.compile(r"parsing_(\d{6,})\.png")
FACE_PATTERN = re.compile(r"face_(\d{6,})\.png")


@dataclass
class PropertyScoresConfig:
    """Section [property_scores] of a profile."""

    algorithm: str = field(default="v2", metadata={"choices": ALGORITHMS,
        "help": f"scoring rules: {', '.join(ALGORITHMS)} (v2 is the one later stages use)"})
    segmentation_dir: str = field(default=FACES.segmentation, metadata={
        "help": "folder with parsing_NNNNNN.png class maps and face_NNNNNN.png crops (relative to the repo root)"})
    output_dir: str = field(default=FACES.property_scores, metadata={
        "help": "folder of the default output file"})
    output: str | None = field(default=None, metadata={
        "help": "output CSV (default: OUTPUT_DIR/" + ", ".join(f"{n} for {a}" for a, n in SCORE_FILES.items()) + ")"})
    geometry: str = field(default="landmarks", metadata={"choices": GEOMETRY_SOURCES,
        "help": "where v2's eyes, mouth and pose scores come from: segmentation (the class maps, as the "
                "original) or landmarks (68 landmarks on the generator's image: eye opening, mouth opening, "
                "and pose_measure; see segmentation/face_geometry.py)"})
    pose_measure: str = field(default="yaw", metadata={"choices": POSE_MEASURES,
        "help": "with geometry = landmarks, what pose_score measures: yaw (head turned left/right) or roll "
                "(eye-line tilt)"})
    images_dir: str = field(default=FACES.filtered, metadata={
        "help": "with geometry = landmarks, the generator's images {img_no:06d}.png the landmarks are found on"})
    landmark_workers: int = field(default=2, metadata={
        "help": "with geometry = landmarks, processes that measure the landmarks (~20 ms a face each)"})
    raw: bool = field(default=False, metadata={
        "help": "write the raw scores instead of z-scores (normalised: per column (x - mean) / sample std, "
                "4 decimals; a constant column becomes 0)"})

    def validate(self) -> None:
        check_choices(self, "property_scores")

    @property
    def uses_landmarks(self) -> bool:
        return self.algorithm == "v2" and self.geometry == "landmarks"

    def output_path(self) -> Path:
        if self.output:
            return resolve_repo_path(self.output)
        return resolve_repo_path(self.output_dir) / SCORE_FILES[self.algorithm]


@dataclass(frozen=True)
class SegmentationPair:
    img_no: int
    parsing_path: Path
    face_path: Path


@dataclass(frozen=True)
class PropertyScoresResult:
    output_path: Path
    config_path: Path
    num_images: int
    seconds: float
    table: pd.DataFrame


def find_segmentation_pairs(segmentation_dir: str | Path) -> list[SegmentationPair]:
    """All class maps in the folder with their face crops, by image number; every map needs its crop."""
    folder = resolve_repo_path(segmentation_dir)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: segmentation folder not found; run the segmentation stage first "
                            f"or pass --segmentation-dir")
    pairs, faces = [], []
    for entry in os.scandir(folder):
        match = PARSING_PATTERN.fullmatch(entry.name)
        if match:
            no = int(match.group(1))
            pairs.append(SegmentationPair(no, folder / entry.name, folder / f"face_{no:06d}.png"))
        elif FACE_PATTERN.fullmatch(entry.name):
            faces.append(entry.name)
    if not pairs:
        raise PipelineError(f"{folder}: no parsing_NNNNNN.png class maps; run the segmentation stage first "
                            f"or pass the right --segmentation-dir")
    pairs.sort(key=lambda p: p.img_no)
    # stage 3 writes a class map with every face crop: a crop without one lost it (and would silently drop out)
    unmapped = sorted(set(faces) - {p.face_path.name for p in pairs})
    if unmapped:
        raise PipelineError(f"{folder / unmapped[0].replace('face_', 'parsing_')}: class map missing for its face "
                            f"crop; re-run run_segmentation.py, which redoes images with missing or empty files")
    missing = [p.face_path for p in pairs if not p.face_path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise PipelineError(f"{missing[0]}: face crop missing for its class map{more}; "
                            f"re-run run_segmentation.py, which redoes images with missing or empty files")
    return pairs


def load_class_map(path: Path) -> np.ndarray:
    """A 224x224 single-channel uint8 class map with values 0..10, or a one-line PipelineError."""
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    class_map = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if class_map is None:
        raise PipelineError(f"{path}: missing or not a readable PNG; delete it and re-run run_segmentation.py, which redoes images with missing or empty files")
    if class_map.ndim != 2 or class_map.dtype != np.uint8 or class_map.shape != (MAP_SIZE, MAP_SIZE):
        channels = 1 if class_map.ndim == 2 else class_map.shape[2]
        raise PipelineError(
            f"{path}: class map is {class_map.shape[1]}x{class_map.shape[0]} with {channels} channel(s) of "
            f"{class_map.dtype}, expected {MAP_SIZE}x{MAP_SIZE} single-channel uint8; delete it and re-run run_segmentation.py")
    top = int(class_map.max())
    if top >= NUM_CLASSES:
        raise PipelineError(f"{path}: class value {top} found, class maps hold 0..{NUM_CLASSES - 1}; "
                            f"delete it and re-run run_segmentation.py, which redoes images with missing or empty files")
    return class_map


def load_face_crop(path: Path) -> np.ndarray:
    face = load_image(path)
    if face.shape != (MAP_SIZE, MAP_SIZE, 3):
        raise PipelineError(f"{path}: face crop is {face.shape[1]}x{face.shape[0]}, expected {MAP_SIZE}x{MAP_SIZE} "
                            f"like its class map; delete it and re-run run_segmentation.py, which redoes images with missing or empty files")
    return face



def score_pairs(pairs: list[SegmentationPair], algorithm: str, show_progress: bool = True) -> pd.DataFrame:
    """Raw scores: one row per pair, columns img_no, img_path (the face crop), then the score columns."""
    rows = []
    # The context manager closes the bar before an error propagates, so the error gets its own line.
    with tqdm(pairs, desc=f"property scores {algorithm}", unit="img", disable=not show_progress) as bar:
        for pair in bar:
            class_map = load_class_map(pair.parsing_path)
            face = load_face_crop(pair.face_path)
            rows.append({"img_no": pair.img_no, "img_path": repo_relative(pair.face_path),
                         **compute_scores(algorithm, class_map, face)})
    return pd.DataFrame(rows, columns=["img_no", "img_path", *SCORE_COLUMNS[algorithm]])


def landmark_geometry(img_nos, images_dir: str | Path, show_progress: bool = True, workers: int = 1) -> pd.DataFrame:
    """img_no + the raw landmark measures (GEOMETRY_COLUMNS) of each generator image {img_no:06d}.png."""
    from segmentation.face_geometry import GEOMETRY_COLUMNS, GeometryPool

    folder = resolve_repo_path(images_dir)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: image folder not found; geometry = landmarks measures the generator's "
                            f"images there (stage 1/2), or pass --images-dir")
    images = []
    for no in img_nos:
        path = folder / f"{int(no):06d}.png"
        if not path.is_file():
            raise PipelineError(f"{path}: image missing for a parsed face; re-run stage 2 (run_cnn.py) or pass "
                                f"the folder the segmentation stage read as --images-dir")
        images.append(load_image(path))
    shapes = Counter(im.shape for im in images)
    if len(shapes) > 1:
        usual = shapes.most_common(1)[0][0]
        odd_no, odd = next((no, im) for no, im in zip(img_nos, images) if im.shape != usual)
        raise PipelineError(f"{folder / f'{int(odd_no):06d}.png'}: image is {odd.shape[1]}x{odd.shape[0]}, the "
                            f"others are {usual[1]}x{usual[0]}; re-run stages 1-2")
    if images:
        with GeometryPool(workers) as pool:
            measures = pool.measure(np.stack(images), progress=show_progress)
    else:
        measures = np.zeros((0, len(GEOMETRY_COLUMNS)))
    frame = pd.DataFrame(measures, columns=list(GEOMETRY_COLUMNS))
    frame.insert(0, "img_no", np.asarray(img_nos, dtype=int))
    return frame


def apply_landmark_scores(table: pd.DataFrame, geometry: pd.DataFrame, pose_measure: str) -> pd.DataFrame:
    """v2 scores with eyes/mouth/pose replaced by the landmark measures; rows without a face are dropped."""
    merged = table.merge(geometry, on="img_no", how="left", validate="one_to_one")
    for column, measure in LANDMARK_SCORES.items():
        merged[column] = merged[measure or pose_measure]
    keep = merged[list(LANDMARK_SCORES)].notna().all(axis=1)
    return merged.loc[keep, list(table.columns)].reset_index(drop=True)


def normalise_table(table: pd.DataFrame, algorithm: str) -> pd.DataFrame:
    table = table.copy()
    for column in SCORE_COLUMNS[algorithm]:
        table[column] = normalise_column(table[column].to_numpy())
    return table


def run_property_scores(config: PropertyScoresConfig, show_progress: bool = True) -> PropertyScoresResult:
    """Score every image of the segmentation folder and write the CSV (atomically) and its config JSON."""
    config.validate()
    start = time.perf_counter()
    pairs = find_segmentation_pairs(config.segmentation_dir)
    table = score_pairs(pairs, config.algorithm, show_progress)
    output_path = config.output_path()
    if config.uses_landmarks:
        geometry = landmark_geometry(table["img_no"].to_numpy(), config.images_dir, show_progress,
                                     config.landmark_workers)
        atomic_write_csv(geometry, output_path.parent / GEOMETRY_FILE, index=False)
        before = len(table)
        table = apply_landmark_scores(table, geometry, config.pose_measure)
        if len(table) < before:
            print(f"geometry: {before - len(table)} of {before} faces without plausible landmarks left out")
    if not config.raw:
        table = normalise_table(table, config.algorithm)
    atomic_write_csv(table, output_path)  # default RangeIndex -> the original's unnamed index column
    resolved = dataclasses.replace(config, output=repo_relative(output_path))
    config_path = dump_config(resolved, output_path.with_suffix(".config.json"))
    return PropertyScoresResult(output_path, config_path, len(table), time.perf_counter() - start, table)
