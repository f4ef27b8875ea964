"""Stage 8, evaluation with the original's protocol ("image generation test", v8 grid and pass rule).

Per case: its latent (z and label dims), w = mapping, the unedited image and its group (scores against the
grouping medians, or `ohlora_w_group_names.csv`), then 50 edits w + e v_eyes + m v_mouth + p v_pose with m over
MOUTH_GRID (outer loop), e over EYES_GRID, p over POSE_GRID (inner loop). The edited images are rendered and scored
in batches straight from the generator (no file round trip); each is also saved as PNG and, for a sample of cases,
the saved files are re-scored to check they give the same scores. Per property r = Pearson correlation between the
50 grid weights and the 50 scores; a case passes when |r| >= the thresholds (v8: 0.92 / 0.88 / 0.88).

Grid weights are applied to our unit vectors, which point towards "more": in w units (edit_unit 'w', the original's
units) or in multiples of the sample's SD of w along each vector ('sd'), times edit_scale. The CSVs hold the grid
values themselves, so r does not depend on the unit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from common import artifacts
from common.errors import PipelineError
from common.fileio import atomic_write_csv, atomic_write_text, load_image, read_csv_checked, save_image
from common.freshness import what_differs
from vectorfind.directions import GROUP_NAMES, TARGET_PROPERTIES, edit_w, group_name, score_column
from vectorfind.models import Scorer
from vectorfind.sampling import codes_to_w, render, sample_codes, score

EYES_GRID = (-1.2, 1.2)
MOUTH_GRID = (-1.8, -0.9, 0.0, 0.9, 1.8)
POSE_GRID = (-1.8, -1.2, -0.6, 0.0, 0.6)
V8_THRESHOLDS = {"eyes": 0.92, "mouth": 0.88, "pose": 0.88}
VECTOR_NO = 0  # one vector set per case (the file names keep the original's slot for it)
RESULT_COLUMNS = ("pm_idx", "eyes_pm", "mouth_pm", "pose_pm", "eyes_score", "mouth_score", "pose_score")
TEST_RESULT_COLUMNS = ("case", "vector_no", "passed", "group_name", "eyes_corr", "mouth_corr", "pose_corr",
                       "sum_abs_corr")
FINGERPRINT_FILE = "evaluation_fingerprint.json"


def edit_grid() -> np.ndarray:
    """[50, 3] (eyes, mouth, pose) weights in the original's order: mouth outer, eyes, pose inner."""
    return np.array([(e, m, p) for m in MOUTH_GRID for e in EYES_GRID for p in POSE_GRID], np.float64)


def case_dir(report_dir: Path, case: int) -> Path:
    return report_dir / f"test_{case:04d}"


def edited_image_path(report_dir: Path, case: int, k: int) -> Path:
    return case_dir(report_dir, case) / f"case_{case:03d}_{VECTOR_NO:03d}_pm_{k:03d}.png"


def case_result_path(report_dir: Path, case: int) -> Path:
    return case_dir(report_dir, case) / f"case_{case:03d}_{VECTOR_NO:03d}_result.csv"


def correlations(grid: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Pearson r per target property between the grid weights and the scores (nan when one side is constant)."""
    out = {}
    for j, prop in enumerate(TARGET_PROPERTIES):
        x, y = grid[:, j], scores[:, j]
        if np.std(x) == 0 or np.std(y) == 0:
            out[prop] = float("nan")
        else:
            out[prop] = float(np.corrcoef(x, y)[0, 1])
    return out


def passes(corr: dict[str, float], thresholds: dict[str, float]) -> bool:
    return all(np.isfinite(corr[p]) and abs(corr[p]) >= thresholds[p] for p in TARGET_PROPERTIES)


def finite_values(frame: pd.DataFrame, path: Path, fix: str) -> np.ndarray:
    """A table's cells as float32, or a one-line error naming the file when one is text, empty or not finite."""
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    if not np.isfinite(values).all():
        row, column = np.argwhere(~np.isfinite(values))[0]
        raise PipelineError(f"{path}: row {row + 1}, column {frame.columns[column]!r} is not a finite number; {fix}")
    return values


def read_case_result(path: Path, rows: int) -> pd.DataFrame:
    """A saved case result (resumed evaluation), checked: the columns, one finite row per grid edit."""
    fix = "delete it, or run run_vectorfind.py evaluate --force (stage 9)"
    result = read_csv_checked(path, fix)
    missing = [c for c in RESULT_COLUMNS if c not in result]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; {fix}")
    if len(result) != rows:
        raise PipelineError(f"{path}: {len(result)} rows, expected {rows} (one per edit); {fix}")
    finite_values(result[list(RESULT_COLUMNS)], path, fix)
    return result


@dataclass
class Cases:
    z: np.ndarray
    labels: np.ndarray
    groups: list[str] | None   # from ohlora_w_group_names.csv, else None (assigned from the unedited image)
    source: str                # 'random' or the latents file


def read_cases(latents_csv: Path, group_csv: Path, count: int, seed: int, z_dim: int, label_size: int) -> Cases:
    """The saved final latents when `latents_csv` exists (all its rows), else `count` seeded random ones."""
    if not latents_csv.is_file():
        z, labels = sample_codes(seed, range(count), z_dim, label_size)
        return Cases(z, labels, None, "random")
    fix = "fix or remove the file (without it the evaluation draws seeded random cases)"
    frame = read_csv_checked(latents_csv, fix)
    if frame.shape[1] != z_dim + label_size:
        raise PipelineError(f"{latents_csv}: {frame.shape[1]} columns, expected {z_dim + label_size} "
                            f"(z {z_dim} + label {label_size}) for this generator; {fix}")
    values = finite_values(frame, latents_csv, fix)
    groups = None
    if group_csv.is_file():
        names = read_csv_checked(group_csv, f"fix or remove it (needed only beside {latents_csv.name})")
        if "group_name" not in names or len(names) != len(frame):
            raise PipelineError(f"{group_csv}: needs a group_name column with one row per row of {latents_csv}")
        groups = [str(g) for g in names["group_name"]]
        unknown = sorted(set(groups) - set(GROUP_NAMES))
        if unknown:
            raise PipelineError(f"{group_csv}: unknown group name(s) {', '.join(unknown)}")
    return Cases(values[:, :z_dim], values[:, z_dim:], groups, str(latents_csv))


@dataclass
class EvaluationSettings:
    thresholds: dict[str, float] = field(default_factory=lambda: dict(V8_THRESHOLDS))
    layers: tuple[int, int] | None = None
    batch_size: int = 100
    save_images: bool = True
    png_check_cases: int = 5
    stop_after_passes: int = 0


def write_latent_codes(report_dir: Path, z: np.ndarray, labels: np.ndarray) -> None:
    def frame(values):
        return pd.DataFrame(np.round(values.astype(np.float64), 4), columns=range(values.shape[1]))

    atomic_write_csv(frame(z), report_dir / "latent_codes_part1.csv", index=False)
    if labels.shape[1]:
        atomic_write_csv(frame(labels), report_dir / "latent_codes_part2.csv", index=False)
    atomic_write_csv(frame(np.concatenate([z, labels], axis=1)), report_dir / artifacts.LATENT_CODES_FILE, index=False)


@torch.inference_mode()
def evaluate(generator, scorer: Scorer, directions_of, medians: dict[str, float], cases: Cases, report_dir: Path,
             settings: EvaluationSettings, weight_scale_of=None, fingerprint: str = "", force: bool = False,
             device="cpu", progress: bool = True, collect=None) -> dict:
    """Run the protocol on every case; returns the summary (also written as evaluation_summary.json).

    directions_of(group) -> {'eyes': v, 'mouth': v, 'pose': v}; weight_scale_of(group) -> {'eyes': s, ...}
    multiplies the grid weights (None: 1). collect(case, grid, scores [50, 8], images [50, H, W, 3]) is called
    for every case computed in this run (the leakage comparison uses it)."""
    started = time.perf_counter()
    report_dir.mkdir(parents=True, exist_ok=True)
    previous = report_dir / FINGERPRINT_FILE
    resume = not force and previous.is_file() and not what_differs(previous.read_text(), fingerprint)
    atomic_write_text(previous, fingerprint)
    grid = edit_grid()
    n_cases = len(cases.z)
    per_chunk = max(1, settings.batch_size // len(grid))
    rows, inmemory_scores, passed_count = [], {}, 0
    bar = tqdm(total=n_cases, unit="case", disable=not progress, dynamic_ncols=True, desc="evaluating")
    try:  # the bar closed first, so an error line is not written into it
        for chunk_start in range(0, n_cases, per_chunk):
            chunk = list(range(chunk_start, min(chunk_start + per_chunk, n_cases)))
            todo = [i for i in chunk if not (resume and case_result_path(report_dir, i).is_file())]
            computed = {}
            if todo:
                w = codes_to_w(generator, cases.z[todo], cases.labels[todo], device)
                unedited = render(generator, generator.truncation(w))
                unedited_scores = score(scorer, unedited)
                wps, meta = [], []
                for row, i in enumerate(todo):
                    group = cases.groups[i] if cases.groups is not None else group_name(unedited_scores[row], medians)
                    vectors = directions_of(group)
                    scale = weight_scale_of(group) if weight_scale_of is not None else {p: 1.0 for p in TARGET_PROPERTIES}
                    weights = {p: grid[:, j] * scale[p] for j, p in enumerate(TARGET_PROPERTIES)}
                    wps.append(edit_w(w[row:row + 1].expand(len(grid), -1), vectors, weights, generator.num_layers,
                                      settings.layers))
                    meta.append((i, group, unedited[row]))
                wp = torch.cat(wps)
                images = np.concatenate([render(generator, wp[s:s + settings.batch_size])
                                         for s in range(0, len(wp), settings.batch_size)])
                scores = score(scorer, images)
                for row, (i, group, original) in enumerate(meta):
                    case_images = images[row * len(grid):(row + 1) * len(grid)]
                    case_scores = scores[row * len(grid):(row + 1) * len(grid)]
                    computed[i] = (group, case_scores, case_images, original)
            for i in chunk:
                if i in computed:
                    group, case_scores, case_images, original = computed[i]
                    target = case_scores[:, [score_column(p) for p in TARGET_PROPERTIES]]
                    inmemory_scores[i] = target
                    if collect is not None:
                        collect(i, grid, case_scores, case_images)
                    if settings.save_images:
                        save_image(original, case_dir(report_dir, i) / f"case_{i:03d}_{VECTOR_NO:03d}_original.png")
                        for k, image in enumerate(case_images):
                            save_image(image, edited_image_path(report_dir, i, k))
                    result = pd.DataFrame({"pm_idx": np.arange(len(grid)), "eyes_pm": grid[:, 0], "mouth_pm": grid[:, 1],
                                           "pose_pm": grid[:, 2], "eyes_score": target[:, 0], "mouth_score": target[:, 1],
                                           "pose_score": target[:, 2]}, columns=RESULT_COLUMNS)
                    atomic_write_csv(result, case_result_path(report_dir, i), index=False)
                    atomic_write_text(case_dir(report_dir, i) / "group_name.txt", group + "\n")
                else:
                    result = read_case_result(case_result_path(report_dir, i), len(grid))
                    target = result[["eyes_score", "mouth_score", "pose_score"]].to_numpy(np.float32)
                    group_file = case_dir(report_dir, i) / "group_name.txt"
                    group = group_file.read_text().strip() if group_file.is_file() else ""
                    if group not in GROUP_NAMES:
                        raise PipelineError(f"{group_file}: missing or not a group name; delete "
                                            f"{case_result_path(report_dir, i).name} beside it, or run run_vectorfind.py "
                                            f"evaluate --force (stage 9)")
                corr = correlations(grid, target)
                ok = passes(corr, settings.thresholds)
                passed_count += ok
                rows.append({"case": i, "vector_no": VECTOR_NO, "passed": "O" if ok else "X", "group_name": group,
                             **{f"{p}_corr": corr[p] for p in TARGET_PROPERTIES},
                             "sum_abs_corr": float(sum(abs(corr[p]) for p in TARGET_PROPERTIES))})
            bar.update(len(chunk))
            if settings.stop_after_passes and passed_count >= settings.stop_after_passes:
                break
    finally:
        bar.close()
    results = pd.DataFrame(rows, columns=TEST_RESULT_COLUMNS)
    atomic_write_csv(results, report_dir / artifacts.TEST_RESULT_FILE, index=False)
    statistics = pd.DataFrame([{f"{p}_corr_mean": results[f"{p}_corr"].mean() for p in TARGET_PROPERTIES}
                               | {"sum_abs_corr_mean": results.sum_abs_corr.mean(),
                                  "passed": int((results.passed == "O").sum()),
                                  "passed_ratio": float((results.passed == "O").mean())}])
    atomic_write_csv(statistics, report_dir / artifacts.TEST_STATISTICS_FILE)
    evaluated = results.case.to_numpy()
    write_latent_codes(report_dir, cases.z[evaluated], cases.labels[evaluated])
    png_check = check_saved_pngs(scorer, report_dir, inmemory_scores, settings) if settings.save_images else None
    summary = {"cases": int(len(results)), "source": cases.source, "passed": int((results.passed == "O").sum()),
               "pass_rate": float((results.passed == "O").mean()) if len(results) else float("nan"),
               "thresholds": settings.thresholds, "edit_layers": settings.layers,
               "mean_abs_corr": {p: float(results[f"{p}_corr"].abs().mean()) for p in TARGET_PROPERTIES},
               "mean_corr": {p: float(results[f"{p}_corr"].mean()) for p in TARGET_PROPERTIES},
               "png_check": png_check, "seconds": time.perf_counter() - started}
    atomic_write_text(report_dir / artifacts.EVALUATION_SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def check_saved_pngs(scorer: Scorer, report_dir: Path, inmemory: dict[int, np.ndarray],
                     settings: EvaluationSettings) -> dict | None:
    """Re-score the saved PNGs of a few cases scored in memory this run; the largest score difference."""
    cases = sorted(inmemory)
    if not cases or settings.png_check_cases <= 0:
        return None
    picked = [cases[int(j)] for j in np.linspace(0, len(cases) - 1, min(settings.png_check_cases, len(cases)))]
    picked = sorted(set(picked))
    n = len(edit_grid())
    images = np.stack([load_image(edited_image_path(report_dir, i, k)) for i in picked for k in range(n)])
    rescored = score(scorer, images)[:, [score_column(p) for p in TARGET_PROPERTIES]]
    expected = np.concatenate([inmemory[i] for i in picked])
    diff = float(np.abs(rescored - expected).max())
    frame = pd.DataFrame({"case": picked, "max_abs_score_diff": [
        float(np.abs(rescored[j * n:(j + 1) * n] - inmemory[i]).max()) for j, i in enumerate(picked)]})
    atomic_write_csv(frame, report_dir / "png_check.csv", index=False)
    return {"cases": picked, "images": len(images), "max_abs_score_diff": diff}
