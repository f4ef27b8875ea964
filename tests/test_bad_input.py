"""Bad input at every boundary, on real outputs of the quick run: a stage (2-9) or the app whose input from the
previous stage is missing, empty, truncated or wrong stops with one line on stderr naming the file, exit code 2, no
traceback, and no other file of the output root changed (hashed before and after).

Table-driven: a case is one row (what to run, which file, which damage, a fragment the message must contain).
Each case works on a copy of the damaged file's original, restored afterwards, so the cases share one quick run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from common.fileio import save_image
from common.pipeline import DEMO_STEPS
from tests.conftest import ROOT

BOOKKEEPING = ("reports/", ".ohlora.lock")


# --- damage --------------------------------------------------------------------------------------------------------

def missing(path: Path) -> None:
    path.unlink()


def empty(path: Path) -> None:
    path.write_bytes(b"")


def truncated(path: Path) -> None:
    """Half the file: a PNG cut by a full disk, a checkpoint cut mid-write."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def cut_mid_row(path: Path) -> None:
    """A CSV cut in the middle of its third data row."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][:len(lines[3]) // 2])


def renamed_column(path: Path, column: int = -1) -> None:
    """A column renamed (an edited header); the last one unless `column` says which."""
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    header[column] = header[column] + "_renamed"
    path.write_text(",".join(header) + "\n" + "".join(lines[1:]))


def replaced_cell(path: Path, value: str, column: int = -1) -> None:
    """One cell of the first data row replaced (the last column unless `column` says which)."""
    lines = path.read_text().splitlines(keepends=True)
    row = lines[1].rstrip("\n").split(",")
    row[column] = value
    path.write_text(lines[0] + ",".join(row) + "\n" + "".join(lines[2:]))


def not_a_number(path: Path, column: int = -1) -> None:
    """Text where a number belongs."""
    replaced_cell(path, "abc", column)


def nan_value(path: Path, column: int = -1) -> None:
    """NaN where a finite number belongs (a value outside its range)."""
    replaced_cell(path, "nan", column)


def nan_in_arrays(path: Path) -> None:
    """An .npz whose scores hold a NaN (a sample shard damaged by hand or by a bug)."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["scores"] = arrays["scores"].copy()
    arrays["scores"].flat[0] = np.nan
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def wrong_size(path: Path) -> None:
    """An image of half the size (another profile's image)."""
    from PIL import Image

    with Image.open(path) as image:
        size = image.size
    save_image(np.zeros((size[1] // 2, size[0] // 2, 3), np.uint8), path)


def grayscale(path: Path) -> None:
    import cv2

    cv2.imwrite(str(path), np.zeros((64, 64), np.uint8))


def other_layout(path: Path) -> None:
    """A checkpoint of another layout: a plain state dict of a small unrelated network."""
    torch.save({"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, path)


# --- the table -----------------------------------------------------------------------------------------------------

def first(pattern: str):
    return lambda root: sorted(root.glob(pattern))[0]


def kept_stage1_image(root: Path) -> Path:
    return root / "stylegan/synthesize_results" / sorted((root / "stylegan/synthesize_results_filtered").glob("*.png"))[0].name


def parsed_face(kind: str):
    return lambda root: sorted((root / "segmentation/segmentation_results").glob(f"{kind}_[0-9]*.png"))[0]


def fixed(rel: str):
    return lambda root: root / rel


@dataclass(frozen=True)
class Case:
    name: str
    command: tuple[str, ...]
    target: object  # root -> the file to damage
    damage: object
    expect: str = ""  # a fragment the message must hold (besides the file name)


LABELS = fixed("cnn/synthesize_results_quality_and_gender.csv")
SCORES_V2 = fixed("segmentation/property_score_results/all_scores_v2.csv")
V1 = fixed("stylegan_modified/stylegan_gen_fine_tuned_v1.pth")
V8 = fixed("stylegan/models/stylegan_gen_fine_tuned_v8.pth")
MERGED = fixed("property_score_cnn/models/ohlora_v3_merged_property_cnn.pth")
DIRECTION = fixed("vectorfind/v8/property_score_vectors/eyes_change_w_vector_hhhh.csv")
V8_SCORES = fixed("segmentation/property_score_results_v8/all_scores_ohlora_v3.csv")

V8_GENERATE = next(("run_original_generator.py", *step.args, "--force") for step in DEMO_STEPS
                   if step.name == "7_v8_generate")

CASES = (
    # stage 2: the stage-1 images and the labels
    Case("2-image-truncated", ("run_cnn.py",), kept_stage1_image, truncated, "truncated"),
    Case("2-image-empty", ("run_cnn.py",), kept_stage1_image, empty),
    Case("2-image-wrong-size", ("run_cnn.py",), kept_stage1_image, wrong_size, "expects 64x64"),
    Case("2-labels-empty", ("run_cnn.py",), LABELS, empty),
    Case("2-labels-cut-mid-row", ("run_cnn.py",), LABELS, cut_mid_row),
    # (the labels' last column, label_source, is optional: the damage goes to `quality`, the second)
    Case("2-labels-renamed-column", ("run_cnn.py",), LABELS, partial(renamed_column, column=1), "missing column"),
    Case("2-labels-not-a-number", ("run_cnn.py",), LABELS, partial(not_a_number, column=1), "expected 0 or 1"),
    # stage 3: the kept images
    Case("3-image-truncated", ("run_segmentation.py", "--force"), first("stylegan/synthesize_results_filtered/*.png"),
         truncated, "truncated"),
    Case("3-image-empty", ("run_segmentation.py", "--force"), first("stylegan/synthesize_results_filtered/*.png"),
         empty),
    Case("3-image-grayscale", ("run_segmentation.py", "--force"), first("stylegan/synthesize_results_filtered/*.png"),
         grayscale, "expected 8-bit RGB"),
    # stage 4: the parse maps and face crops
    Case("4-parse-map-empty", ("compute_property_scores.py", "--algorithm", "v2"), parsed_face("parsing"), empty),
    Case("4-parse-map-truncated", ("compute_property_scores.py", "--algorithm", "v2"), parsed_face("parsing"),
         truncated),
    Case("4-face-missing", ("compute_property_scores.py", "--algorithm", "v2"), parsed_face("face"), missing),
    Case("4-face-wrong-size", ("compute_property_scores.py", "--algorithm", "v2"), parsed_face("face"), wrong_size),
    # stage 5: the score tables
    Case("5-scores-missing", ("run_property_score_cnn.py", "--model", "seven"), SCORES_V2, missing),
    Case("5-scores-empty", ("run_property_score_cnn.py", "--model", "seven"), SCORES_V2, empty),
    Case("5-image-truncated", ("run_property_score_cnn.py", "--model", "seven"),
         first("stylegan/synthesize_results_filtered/*.png"), truncated, "truncated"),
    Case("5-scores-cut-mid-row", ("run_property_score_cnn.py", "--model", "seven"), SCORES_V2, cut_mid_row),
    Case("5-scores-renamed-column", ("run_property_score_cnn.py", "--model", "seven"), SCORES_V2, renamed_column),
    Case("5-scores-not-a-number", ("run_property_score_cnn.py", "--model", "seven"), SCORES_V2, not_a_number),
    Case("5-hairstyle-scores-nan", ("run_property_score_cnn.py", "--model", "hairstyle"), V8_SCORES, nan_value),
    # stage 6: FineTune-v8 starts from FineTune-v1
    Case("6-scores-cut-mid-row", ("run_stylegan_fine_tuning.py", "--version", "v1", "--force"), SCORES_V2,
         cut_mid_row),
    Case("6-image-truncated", ("run_stylegan_fine_tuning.py", "--version", "v1", "--force"),
         first("stylegan/synthesize_results_filtered/*.png"), truncated, "truncated"),
    Case("6-v1-missing", ("run_stylegan_fine_tuning.py", "--version", "v8", "--force"), V1, missing),
    Case("6-v1-truncated", ("run_stylegan_fine_tuning.py", "--version", "v8", "--force"), V1, truncated),
    Case("6-v1-other-layout", ("run_stylegan_fine_tuning.py", "--version", "v8", "--force"), V1, other_layout),
    # stage 7: the v8 dataset samples FineTune-v1 (the pipeline's command)
    Case("7-v1-missing", V8_GENERATE, V1, missing),
    Case("7-v1-truncated", V8_GENERATE, V1, truncated),
    Case("7-v1-other-layout", V8_GENERATE, V1, other_layout),
    # stages 8-9: FineTune-v8 and the merged property CNN
    Case("8-v8-truncated", ("run_vectorfind.py",), V8, truncated),
    Case("8-v8-other-layout", ("run_vectorfind.py",), V8, other_layout),
    Case("8-sample-shard-nan", ("run_vectorfind.py",), first("vectorfind/v8/samples/shard_*.npz"), nan_in_arrays,
         "not finite numbers"),
    Case("8-merged-cnn-missing", ("run_vectorfind.py",), MERGED, missing),
    Case("8-merged-cnn-empty", ("run_vectorfind.py",), MERGED, empty),
    Case("8-merged-cnn-other-layout", ("run_vectorfind.py",), MERGED, other_layout),
    # the app: its generator and direction files
    Case("app-direction-nan", ("run_app.py", "--check"), DIRECTION, nan_value, "finite numbers"),
    Case("app-direction-missing", ("run_app.py", "--check"), DIRECTION, missing),
    Case("app-direction-cut-mid-row", ("run_app.py", "--check"), DIRECTION, truncated),
    Case("app-v8-other-layout", ("run_app.py", "--check"), V8, other_layout),
)


def tree_hashes(root: Path, skip: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and path != skip and not rel.startswith(BOOKKEEPING):
            out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_stops_with_one_line_and_changes_nothing(case, quick_embedded_root, tmp_path):
    root = quick_embedded_root
    target = case.target(root)
    backup = tmp_path / "original"
    shutil.copy2(target, backup)
    before = tree_hashes(root, target)
    try:
        case.damage(target)
        done = subprocess.run([sys.executable, str(ROOT / case.command[0]), *case.command[1:], "--quick",
                               "--output-root", str(root)], cwd=ROOT, capture_output=True, text=True, timeout=600)
        after = tree_hashes(root, target)
    finally:
        shutil.copy2(backup, target)
    # stderr also carries progress bars and library warnings; the error is the one line that starts with "error: "
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr[-1500:]}"
    assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr[-1500:]
    assert target.name in errors[0] and case.expect in errors[0], errors[0]
    changed = sorted(rel for rel in before.keys() | after.keys() if before.get(rel) != after.get(rel))
    assert not changed, changed[:10]
