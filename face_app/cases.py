"""Faces to edit and cases to select: the evaluation's report, the final selection, seeded faces.

Files (the original's names), all under the VectorFind folder (vectorfind/v8 by default):
    image_generation_report/test_result.csv     case, vector_no, passed ('O'/'X'), group_name,
                                                eyes_corr, mouth_corr, pose_corr, sum_abs_corr
    image_generation_report/latent_codes_all.csv one latent row per tested case (row i = case i), header 0..D-1
    ohlora_z_vectors.csv                        the chosen latent rows, header 0..D-1, no index
    ohlora_w_group_names.csv                    the chosen cases' test_result rows (same columns), no index
Every reader tolerates missing files (an empty table or no faces); a present but malformed file is a
one-line error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common import artifacts
from common.errors import PipelineError
from common.fileio import atomic_path, read_csv_checked
from common.paths import repo_relative

RESULT_COLUMNS = ("case", "vector_no", "passed", "group_name", "eyes_corr", "mouth_corr", "pose_corr", "sum_abs_corr")


@dataclass
class FaceChoice:
    name: str                # shown in the face menu: "case 83 (hlhl)", "seed 5"
    latent: np.ndarray       # z dims then label dims, as the evaluation stores it
    group: str | None = None  # direction group; None = not known (seeded faces)
    case: int | None = None
    seed: int | None = None


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """A CSV of the evaluation or a saved selection: empty, cut mid-row or unreadable is one line."""
    return read_csv_checked(path, "re-run the stage that writes it", **kwargs)


def _latent_frame(path: Path) -> pd.DataFrame:
    frame = _read_csv(path)
    if frame.empty or not all(str(c).isdigit() for c in frame.columns):
        raise PipelineError(f"{path}: expected latent columns 0..D-1 and one row per face; re-run the evaluation")
    return frame


def read_evaluated_cases(vectorfind_dir: Path) -> pd.DataFrame:
    """test_result.csv of the evaluation joined with its latent rows (columns '0'..'D-1'); empty if not run."""
    report = Path(vectorfind_dir) / artifacts.EVALUATION_DIR
    results_path, latents_path = report / artifacts.TEST_RESULT_FILE, report / artifacts.LATENT_CODES_FILE
    if not results_path.is_file():
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    results = _read_csv(results_path)
    missing = [c for c in ("case", "passed", "eyes_corr", "mouth_corr", "pose_corr") if c not in results.columns]
    if missing:
        raise PipelineError(f"{results_path}: missing column(s) {', '.join(missing)}; re-run the evaluation")
    results = results[[c for c in results.columns if not str(c).startswith("Unnamed")]]
    if "sum_abs_corr" not in results.columns:
        results["sum_abs_corr"] = results[["eyes_corr", "mouth_corr", "pose_corr"]].abs().sum(axis=1)
    if latents_path.is_file():
        latents = _latent_frame(latents_path)
        cases = results["case"].astype(int).to_numpy()
        if cases.max(initial=-1) >= len(latents):
            raise PipelineError(f"{latents_path}: {len(latents)} latent rows but {results_path} names case "
                                f"{cases.max()}; the two files come from different runs, re-run the evaluation")
        latents = latents.iloc[cases].reset_index(drop=True)
        latents.columns = [str(c) for c in latents.columns]
        results = pd.concat([results.reset_index(drop=True), latents], axis=1)
    return results


def latent_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).isdigit()]


def passed_mask(frame: pd.DataFrame) -> pd.Series:
    return frame["passed"].astype(str).str.upper().isin(["O", "TRUE", "1"])


def write_selection(cases: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """ohlora_z_vectors.csv (the latent rows) and ohlora_w_group_names.csv (their test rows), both replaced
    only once both are fully written (the latents first, so a new group file always has its latents)."""
    columns = latent_columns(cases)
    if not columns:
        latents = Path(out_dir) / artifacts.EVALUATION_DIR / artifacts.LATENT_CODES_FILE
        raise PipelineError(f"{latents}: no latents for the cases; "
                            f"re-run the evaluation, which writes them")
    z_path, group_path = Path(out_dir) / artifacts.Z_VECTORS_FILE, Path(out_dir) / artifacts.GROUP_NAMES_FILE
    test_rows = cases[[c for c in RESULT_COLUMNS if c in cases.columns]].reset_index(drop=True)
    with atomic_path(group_path) as group_tmp, atomic_path(z_path) as z_tmp:
        cases[columns].round(4).reset_index(drop=True).to_csv(z_tmp, index=False)
        test_rows.to_csv(group_tmp, index=False)
    return z_path, group_path


def read_selection(vectorfind_dir: Path) -> list[FaceChoice]:
    z_path = Path(vectorfind_dir) / artifacts.Z_VECTORS_FILE
    if not z_path.is_file():
        return []
    latents = _latent_frame(z_path).to_numpy(np.float32)
    group_path = Path(vectorfind_dir) / artifacts.GROUP_NAMES_FILE
    rows = _read_csv(group_path) if group_path.is_file() else pd.DataFrame()
    if len(rows) and len(rows) != len(latents):
        raise PipelineError(f"{group_path}: {len(rows)} rows for {len(latents)} faces in {z_path}; "
                            f"save the selection again (Select tab)")
    faces = []
    for i, latent in enumerate(latents):
        row = rows.iloc[i] if len(rows) else {}
        case = int(row["case"]) if "case" in row else None
        group = str(row["group_name"]) if "group_name" in row else None
        label = f"case {case}" if case is not None else f"face {i}"
        faces.append(FaceChoice(f"{label} ({group})" if group else label, latent, group, case))
    return faces


def seeded_face(seed: int, latent_dim: int) -> FaceChoice:
    """A face from seed alone: z and label dims N(0,1), as the evaluation samples its random cases."""
    latent = np.random.default_rng([seed, 0]).standard_normal(latent_dim, dtype=np.float32)
    return FaceChoice(f"seed {seed}", latent, None, seed=seed)


def face_choices(vectorfind_dir: Path, latent_dim: int, seed: int, num_seeded: int = 4) -> tuple[list[FaceChoice], str]:
    """The Edit tab's faces and where they came from: the final selection, else the evaluation's passed
    cases, else seeded faces."""
    selected = read_selection(vectorfind_dir)
    if selected:
        return selected, repo_relative(Path(vectorfind_dir) / artifacts.Z_VECTORS_FILE)
    cases = read_evaluated_cases(vectorfind_dir)
    if len(cases) and latent_columns(cases):
        passed = cases[passed_mask(cases)]
        faces = [FaceChoice(f"case {int(r['case'])} ({r['group_name']})" if "group_name" in r else f"case {int(r['case'])}",
                            r[latent_columns(cases)].to_numpy(np.float32), r.get("group_name"), int(r["case"]))
                 for _, r in passed.iterrows()]
        if faces:
            return faces, f"{repo_relative(Path(vectorfind_dir) / artifacts.EVALUATION_DIR)} (passed cases)"
    return [seeded_face(seed + i, latent_dim) for i in range(num_seeded)], f"seeds {seed}-{seed + num_seeded - 1}"


def check_latent_width(faces: list[FaceChoice], latent_dim: int, source: str) -> None:
    for face in faces:
        if face.latent.size != latent_dim:
            raise PipelineError(f"{source}: {face.name} has {face.latent.size} latent values, the generator needs "
                                f"{latent_dim}; the faces come from another generator")
