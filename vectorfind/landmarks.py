"""Landmark geometry inside VectorFind: labels for the SVMs, and a second grading of the edits.

The property CNN reads eyes, mouth and pose from small crops of a 64 px face, and the directions learnt from
its scores follow whatever it reads (at 64 px: partly lighting). Here the same samples are measured with
68 landmarks (segmentation/face_geometry.py): eye opening, mouth opening, and yaw or roll for pose.

    samples/geometry_{start}_{end}.npz   [n, 4] GEOMETRY_COLUMNS of the samples in that shard (re-rendered from
                                         the shard's saved w, so the images are the sampled ones), for the first
                                         landmark_samples samples; a killed run resumes shard by shard
    <report>/landmark_grading.csv        per re-measured case: Pearson r of each grid weight with its landmark
                                         measure, from the saved PNGs of the evaluation
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from common import artifacts
from common.errors import PipelineError
from common.fileio import atomic_path, atomic_write_csv, load_image
from segmentation.face_geometry import GEOMETRY_COLUMNS, FaceGeometry, GeometryPool
from vectorfind.directions import TARGET_PROPERTIES
from vectorfind.sampling import read_shard, render, shard_path, shard_ranges

GEOMETRY_PATTERN = "geometry_{start:06d}_{end:06d}.npz"
GRADING_FILE = artifacts.LANDMARK_GRADING_FILE


def target_measures(pose_measure: str) -> dict[str, str]:
    """Target property -> the landmark measure that labels it."""
    return {"eyes": "eye_opening", "mouth": "mouth_opening", "pose": pose_measure}


def geometry_ranges(num_samples: int, shard_size: int, landmark_samples: int) -> list[tuple[int, int]]:
    """The sample shards whose samples get measured: the first ones, up to landmark_samples (whole shards)."""
    return [(a, b) for a, b in shard_ranges(num_samples, shard_size) if a < landmark_samples]


def geometry_path(samples_dir: Path, start: int, end: int) -> Path:
    return samples_dir / GEOMETRY_PATTERN.format(start=start, end=end)


def _read_geometry(path: Path, fingerprint: str, count: int) -> np.ndarray | None:
    """A geometry shard's [count, 4] array (None when missing); read and checked like the sample shards."""
    shard = read_shard(path, fingerprint)
    if shard is None:
        return None
    geometry = shard.get("geometry")
    if geometry is None or geometry.shape != (count, len(GEOMETRY_COLUMNS)):
        found = "no geometry array" if geometry is None else f"{geometry.shape}"
        raise PipelineError(f"{path}: holds {found}, expected ({count}, {len(GEOMETRY_COLUMNS)}); "
                            f"delete it or re-run with --force")
    return geometry


def measuring(geometry, workers: int):
    """A context holding the given landmark model, or a new one (`workers` processes) closed on exit."""
    if geometry is not None:
        return contextlib.nullcontext(geometry)
    return GeometryPool(workers) if workers > 1 else contextlib.nullcontext(FaceGeometry())


@torch.inference_mode()
def measure_sample_geometry(generator, samples_dir: Path, num_samples: int, shard_size: int, landmark_samples: int,
                            fingerprint: str, batch_size: int, device, force: bool = False,
                            progress: bool = True, geometry=None, workers: int = 1) -> int:
    """Write the missing geometry shards; returns how many samples were measured.

    geometry: an object with measure(images) (default: FaceGeometry in `workers` processes)."""
    ranges = geometry_ranges(num_samples, shard_size, landmark_samples)
    todo = [(a, b) for a, b in ranges
            if force or _read_geometry(geometry_path(samples_dir, a, b), fingerprint, b - a) is None]
    total = sum(b - a for a, b in todo)
    if not todo:
        return 0
    bar = tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True, desc="landmark labels")
    with measuring(geometry, workers) as model:
        for start, end in todo:
            shard = read_shard(shard_path(samples_dir, start, end), fingerprint)
            if shard is None:
                raise PipelineError(f"{shard_path(samples_dir, start, end)}: shard missing; run the sample phase "
                                    f"first")
            w = torch.from_numpy(shard["w"]).to(device)
            images = np.concatenate([render(generator, generator.truncation(w[s:s + batch_size]))
                                     for s in range(0, len(w), batch_size)])
            measured = model.measure(images)
            bar.update(len(images))
            with atomic_path(geometry_path(samples_dir, start, end)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, geometry=measured, fingerprint=np.str_(fingerprint))
    bar.close()
    return total


def load_sample_geometry(samples_dir: Path, num_samples: int, shard_size: int, landmark_samples: int,
                         fingerprint: str) -> np.ndarray:
    """[n, 4] geometry of the first n samples (n = landmark_samples rounded up to whole shards)."""
    parts = []
    for start, end in geometry_ranges(num_samples, shard_size, landmark_samples):
        geometry = _read_geometry(geometry_path(samples_dir, start, end), fingerprint, end - start)
        if geometry is None:
            raise PipelineError(f"{geometry_path(samples_dir, start, end)}: landmark labels missing; run the "
                                f"sample phase (run_vectorfind.py sample) with label_source = landmarks")
        parts.append(geometry)
    return np.concatenate(parts)


def landmark_scores(scores: np.ndarray, geometry: np.ndarray, pose_measure: str) -> tuple[np.ndarray, np.ndarray]:
    """The first len(geometry) score rows with eyes/mouth/pose replaced by their landmark measures, and the
    indices of the rows kept (a face without plausible landmarks is left out)."""
    from vectorfind.directions import score_column

    out = scores[:len(geometry)].astype(np.float64).copy()
    for prop, measure in target_measures(pose_measure).items():
        out[:, score_column(prop)] = geometry[:, GEOMETRY_COLUMNS.index(measure)]
    keep = np.flatnonzero(np.isfinite(out).all(axis=1))
    if len(keep) < 50:
        raise PipelineError(f"only {len(keep)} of {len(geometry)} samples have plausible landmarks; the generator "
                            f"does not draw faces the landmark model finds (use label_source = cnn)")
    return out[keep], keep


def _grade_case(case: int, grid: np.ndarray, values: np.ndarray, measures: dict[str, str]) -> dict:
    """One row of landmark_grading.csv: r of each grid weight with its measure over the faces found."""
    row = {"case": case}
    for j, prop in enumerate(TARGET_PROPERTIES):
        y = values[:, GEOMETRY_COLUMNS.index(measures[prop])]
        ok = np.isfinite(y)
        x = grid[ok, j]
        row[f"{prop}_landmark_corr"] = (float(np.corrcoef(x, y[ok])[0, 1])
                                        if ok.sum() > 2 and np.std(x) > 0 and np.std(y[ok]) > 0 else float("nan"))
    row["faces_found"] = int(np.isfinite(values).all(axis=1).sum())
    return row


def grade_with_landmarks(report_dir: Path, grid: np.ndarray, cases: list[int], count: int, seed: int,
                         pose_measure: str, image_path_of, progress: bool = True, geometry=None,
                         workers: int = 1) -> dict:
    """Re-measure the saved edited images of a seeded sample of `cases` with landmarks.

    Per case and target property: Pearson r between the grid weights and the landmark measure (our vectors
    point towards more, so a positive r is the right way). Writes landmark_grading.csv; returns the summary."""
    if not cases or count <= 0:
        return {}
    rng = np.random.default_rng([seed, 68])
    picked = sorted(int(c) for c in rng.choice(cases, min(count, len(cases)), replace=False))
    measures = target_measures(pose_measure)
    rows = []
    with measuring(geometry, workers) as model:
        for case in tqdm(picked, desc="landmark grading", unit="case", disable=not progress, dynamic_ncols=True):
            images = np.stack([load_image(image_path_of(case, k)) for k in range(len(grid))])
            rows.append(_grade_case(case, grid, model.measure(images), measures))
    table = pd.DataFrame(rows)
    atomic_write_csv(table, report_dir / GRADING_FILE, index=False)
    return {"cases": len(picked), "pose_measure": pose_measure,
            "mean_abs_corr": {p: float(table[f"{p}_landmark_corr"].abs().mean()) for p in TARGET_PROPERTIES},
            "mean_corr": {p: float(table[f"{p}_landmark_corr"].mean()) for p in TARGET_PROPERTIES},
            "right_way": {p: float((table[f"{p}_landmark_corr"] > 0).mean()) for p in TARGET_PROPERTIES}}
