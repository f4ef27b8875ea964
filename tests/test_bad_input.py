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


def replaced_cell(path: Path, value: str, column: int = -1, row: int = 1) -> None:
    """One cell replaced: of the first data row and the last column unless `row` / `column` say which."""
    lines = path.read_text().splitlines(keepends=True)
    cells = lines[row].rstrip("\n").split(",")
    cells[column] = value
    lines[row] = ",".join(cells) + "\n"
    path.write_text("".join(lines))


def not_a_number(path: Path, column: int = -1, row: int = 1) -> None:
    """Text where a number belongs."""
    replaced_cell(path, "abc", column, row)


def nan_value(path: Path, column: int = -1, row: int = 1) -> None:
    """NaN where a finite number belongs (a value outside its range)."""
    replaced_cell(path, "nan", column, row)


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


def other_run_shard(path: Path) -> None:
    """A shard of another run (another generator, CNN or seed): same arrays, another fingerprint."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["fingerprint"] = np.str_("{}")
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def other_layout(path: Path) -> None:
    """A checkpoint of another layout: a plain state dict of a small unrelated network."""
    torch.save({"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, path)


# --- the table -----------------------------------------------------------------------------------------------------

def first(pattern: str):
    return lambda root: sorted(root.glob(pattern))[0]


def kept_image(images: str = "stylegan/synthesize_results", kept: str = "stylegan/synthesize_results_filtered"):
    """A generated image that stage 2 kept (so every later stage reads it too)."""
    return lambda root: root / images / sorted((root / kept).glob("*.png"))[0].name


kept_stage1_image = kept_image()


def parsed_face(kind: str, folder: str = "segmentation/segmentation_results"):
    return lambda root: sorted((root / folder).glob(f"{kind}_[0-9]*.png"))[0]


def scored_image(scores: str, images: str = "stylegan/synthesize_results_filtered"):
    """The image of the first row of a stage-4 score table (one the next stage must find)."""
    def target(root: Path) -> Path:
        import pandas as pd

        return root / images / f"{int(pd.read_csv(root / scores)['img_no'].iloc[0]):06d}.png"
    return target


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
V8_LABELS = fixed("stylegan/generate_dataset/scores_labeled_first_2k.csv")
SCORES_V2 = fixed("segmentation/property_score_results/all_scores_v2.csv")
V1 = fixed("stylegan_modified/stylegan_gen_fine_tuned_v1.pth")
V1_DIS = fixed("stylegan_modified/stylegan_dis_fine_tuned_v1.pth")
V8 = fixed("stylegan/models/stylegan_gen_fine_tuned_v8.pth")
MONITOR_FOLD = fixed("cnn/models/gender_model_0.pt")
SEVEN = fixed("property_score_cnn/models/stylegan_gen_fine_tuned_v2_cnn.pth")
HAIRSTYLE = fixed("property_score_cnn/models/ohlora_v3_hairstyle_property_cnn.pth")
MERGED = fixed("property_score_cnn/models/ohlora_v3_merged_property_cnn.pth")
DIRECTION = fixed("vectorfind/v8/property_score_vectors/eyes_change_w_vector_hhhh.csv")
V8_SCORES = fixed("segmentation/property_score_results_v8/all_scores_ohlora_v3.csv")
CASE_RESULT = fixed("vectorfind/v8/image_generation_report/test_0001/case_001_000_result.csv")
MEDIANS = fixed("vectorfind/v8_property_scores/property_scores_mean_and_median.csv")
TEST_RESULT = fixed("vectorfind/v8/image_generation_report/test_result.csv")
EVAL_LATENTS = fixed("vectorfind/v8/image_generation_report/latent_codes_all.csv")
SHARD = first("vectorfind/v8/samples/shard_*.npz")
GEOMETRY = first("vectorfind/v8/samples/geometry_*.npz")
FILTERED = first("stylegan/synthesize_results_filtered/*.png")
V8_FILTERED = first("stylegan/generated_face_images_filtered/*.png")
V8_KEPT = kept_image("stylegan/generated_face_images", "stylegan/generated_face_images_filtered")
SCORED = scored_image("segmentation/property_score_results/all_scores_v2.csv")

V8_GENERATE = next(("run_original_generator.py", *step.args, "--force") for step in DEMO_STEPS
                   if step.name == "7_v8_generate")
CNN = ("run_cnn.py",)
CNN_V8 = ("run_cnn.py", "--stage", "v8_dataset")
SEGMENT = ("run_segmentation.py", "--force")
SEGMENT_V8 = ("run_segmentation.py", "--stage", "v8_dataset", "--force")
SCORES = ("compute_property_scores.py", "--algorithm", "v2")
SCORES_V8 = ("compute_property_scores.py", "--stage", "v8_dataset")
SEVEN_CNN = ("run_property_score_cnn.py", "--model", "seven")
MERGE = ("run_property_score_cnn.py", "--model", "merged")
TUNE_V1 = ("run_stylegan_fine_tuning.py", "--version", "v1", "--force")
TUNE_V8 = ("run_stylegan_fine_tuning.py", "--version", "v8", "--force")
VECTORFIND = ("run_vectorfind.py",)
EVALUATE = ("run_vectorfind.py", "evaluate")  # the phase alone: a full run's sample phase rewrites the medians
APP = ("run_app.py", "--check")

# Boundaries x kinds of damage covered (M missing, E empty, T truncated / cut mid-row, W wrong: renamed column,
# text or NaN in a number column, wrong size, grayscale, another layout or run):
#   stage 2   stage-1 image: E T W(size, gray) | labels CSV: E T W(column, text, NaN)
#   stage 3   kept image: E T W(gray, size)
#   stage 4   class map: M E T W(size) | face crop: M E W(size, gray) | kept image (landmarks): M T W(size)
#   stage 5   score CSV: M E T W(column, text, NaN) | kept image: M T W(size) | seven / hairstyle CNN (merge): M T W
#   stage 6   v1: score CSV: M E T W(column, text, NaN) | kept image: M T W(size, gray) | monitor fold model: M
#             v8: FineTune-v1 G: M E T W | FineTune-v1 D: M T W | v8-dataset image: T W(size)
#   stage 7   FineTune-v1 (generation): M E T W | labels CSV: T W(column, NaN) | generated image: T W(gray) |
#             kept image (segmentation): T W(size) | class map: T | face crop: M
#   stage 8   FineTune-v8: E T W | merged CNN: M E T W | sample shard: E T W(NaN, other run) |
#             geometry shard: E T W(other run)
#   stage 9   medians CSV: M E T W(column, text, NaN) | direction file: M E W(NaN)
#   app       generator: E T W | direction file: M E T W(column, NaN) | evaluation table: T W(column) |
#             evaluation latents: T W(column)
# Not errors by design, so not rows: a missing stage-1 or kept image (stages 2-3 list their folder: it is one image
# fewer), a missing stage-2 labels CSV (the annotator writes it), a missing v8 score CSV for the hairstyle CNN
# (it falls back to the stage-1 set's), a missing sample or geometry shard (the sample phase computes it: a killed
# run resumes that way), a missing FineTune-v8 for VectorFind and the app (they fall back to FineTune-v1), a
# property stage 7 left out for scarce labels (skip_scarce_properties: FineTune-v8's monitor leaves it out, said in
# the log).

CASES = (
    # stage 2: the stage-1 images and the labels
    Case("2-image-truncated", CNN, kept_stage1_image, truncated, "truncated"),
    Case("2-image-empty", CNN, kept_stage1_image, empty),
    Case("2-image-wrong-size", CNN, kept_stage1_image, wrong_size, "expects 64x64"),
    Case("2-image-grayscale", CNN, kept_stage1_image, grayscale, "expected 8-bit RGB"),
    Case("2-labels-empty", CNN, LABELS, empty),
    Case("2-labels-cut-mid-row", CNN, LABELS, cut_mid_row),
    # (the labels' last column, label_source, is optional: the damage goes to `quality`, the second)
    Case("2-labels-renamed-column", CNN, LABELS, partial(renamed_column, column=1), "missing column"),
    Case("2-labels-not-a-number", CNN, LABELS, partial(not_a_number, column=1), "expected 0 or 1"),
    Case("2-labels-nan", CNN, LABELS, partial(nan_value, column=1), "expected 0 or 1"),
    # stage 3: the kept images
    Case("3-image-truncated", SEGMENT, FILTERED, truncated, "truncated"),
    Case("3-image-empty", SEGMENT, FILTERED, empty),
    Case("3-image-grayscale", SEGMENT, FILTERED, grayscale, "expected 8-bit RGB"),
    Case("3-image-wrong-size", SEGMENT, FILTERED, wrong_size),
    # stage 4: the class maps and face crops, and the kept images the landmark geometry measures
    Case("4-parse-map-missing", SCORES, parsed_face("parsing"), missing),
    Case("4-parse-map-empty", SCORES, parsed_face("parsing"), empty),
    Case("4-parse-map-truncated", SCORES, parsed_face("parsing"), truncated),
    Case("4-parse-map-wrong-size", SCORES, parsed_face("parsing"), wrong_size),
    Case("4-face-missing", SCORES, parsed_face("face"), missing),
    Case("4-face-empty", SCORES, parsed_face("face"), empty),
    Case("4-face-wrong-size", SCORES, parsed_face("face"), wrong_size),
    Case("4-face-grayscale", SCORES, parsed_face("face"), grayscale),
    Case("4-image-missing", SCORES, SCORED, missing),
    Case("4-image-truncated", SCORES, SCORED, truncated, "truncated"),
    Case("4-image-wrong-size", SCORES, SCORED, wrong_size),
    # stage 5: the score tables, the kept images, and (merge) the two trained CNNs
    Case("5-scores-missing", SEVEN_CNN, SCORES_V2, missing),
    Case("5-scores-empty", SEVEN_CNN, SCORES_V2, empty),
    Case("5-scores-cut-mid-row", SEVEN_CNN, SCORES_V2, cut_mid_row),
    Case("5-scores-renamed-column", SEVEN_CNN, SCORES_V2, renamed_column),
    Case("5-scores-not-a-number", SEVEN_CNN, SCORES_V2, not_a_number),
    Case("5-hairstyle-scores-nan", ("run_property_score_cnn.py", "--model", "hairstyle"), V8_SCORES, nan_value),
    Case("5-image-missing", SEVEN_CNN, SCORED, missing),
    Case("5-image-truncated", SEVEN_CNN, FILTERED, truncated, "truncated"),
    Case("5-image-wrong-size", SEVEN_CNN, SCORED, wrong_size, "expects 64x64"),
    Case("5-seven-cnn-missing", MERGE, SEVEN, missing),
    Case("5-seven-cnn-truncated", MERGE, SEVEN, truncated),
    Case("5-hairstyle-cnn-other-layout", MERGE, HAIRSTYLE, other_layout),
    # stage 6 v1: the score table and the kept images
    Case("6-scores-missing", TUNE_V1, SCORES_V2, missing),
    Case("6-scores-empty", TUNE_V1, SCORES_V2, empty),
    Case("6-scores-cut-mid-row", TUNE_V1, SCORES_V2, cut_mid_row),
    Case("6-scores-renamed-column", TUNE_V1, SCORES_V2, renamed_column, "missing column"),
    Case("6-scores-not-a-number", TUNE_V1, SCORES_V2, not_a_number),
    Case("6-scores-nan", TUNE_V1, SCORES_V2, nan_value),
    Case("6-image-missing", TUNE_V1, SCORED, missing),
    Case("6-image-truncated", TUNE_V1, FILTERED, truncated, "truncated"),
    Case("6-image-wrong-size", TUNE_V1, SCORED, wrong_size),
    Case("6-image-grayscale", TUNE_V1, SCORED, grayscale, "expected 8-bit RGB"),
    # the monitor's stage-2 ensembles
    Case("6-monitor-fold-missing", TUNE_V1, MONITOR_FOLD, missing, "monitor_classifiers"),
    # stage 6 v8: FineTune-v8 starts from FineTune-v1 and trains on the v8 dataset
    Case("6-v1-missing", TUNE_V8, V1, missing),
    Case("6-v1-empty", TUNE_V8, V1, empty),
    Case("6-v1-truncated", TUNE_V8, V1, truncated),
    Case("6-v1-other-layout", TUNE_V8, V1, other_layout),
    Case("6-v1-discriminator-missing", TUNE_V8, V1_DIS, missing),
    Case("6-v1-discriminator-truncated", TUNE_V8, V1_DIS, truncated),
    Case("6-v1-discriminator-other-layout", TUNE_V8, V1_DIS, other_layout),
    Case("6-v8-image-truncated", TUNE_V8, V8_FILTERED, truncated, "truncated"),
    Case("6-v8-image-wrong-size", TUNE_V8, V8_FILTERED, wrong_size),
    # stage 7: the v8 dataset samples FineTune-v1 (the pipeline's command), then runs stages 2-4 on it
    Case("7-v1-missing", V8_GENERATE, V1, missing),
    Case("7-v1-empty", V8_GENERATE, V1, empty),
    Case("7-v1-truncated", V8_GENERATE, V1, truncated),
    Case("7-v1-other-layout", V8_GENERATE, V1, other_layout),
    Case("7-labels-cut-mid-row", CNN_V8, V8_LABELS, cut_mid_row),
    Case("7-labels-renamed-column", CNN_V8, V8_LABELS, partial(renamed_column, column=1), "missing column"),
    Case("7-labels-nan", CNN_V8, V8_LABELS, partial(nan_value, column=1), "expected 0 or 1"),
    Case("7-image-truncated", CNN_V8, V8_KEPT, truncated, "truncated"),
    Case("7-image-grayscale", CNN_V8, V8_KEPT, grayscale, "expected 8-bit RGB"),
    Case("7-kept-image-truncated", SEGMENT_V8, V8_FILTERED, truncated, "truncated"),
    Case("7-kept-image-wrong-size", SEGMENT_V8, V8_FILTERED, wrong_size),
    Case("7-parse-map-truncated", SCORES_V8, parsed_face("parsing", "segmentation/segmentation_results_v8"),
         truncated),
    Case("7-face-missing", SCORES_V8, parsed_face("face", "segmentation/segmentation_results_v8"), missing),
    # stage 8: FineTune-v8, the merged property CNN, the sample and landmark geometry shards
    Case("8-v8-empty", VECTORFIND, V8, empty),
    Case("8-v8-truncated", VECTORFIND, V8, truncated),
    Case("8-v8-other-layout", VECTORFIND, V8, other_layout),
    Case("8-merged-cnn-missing", VECTORFIND, MERGED, missing),
    Case("8-merged-cnn-empty", VECTORFIND, MERGED, empty),
    Case("8-merged-cnn-truncated", VECTORFIND, MERGED, truncated),
    Case("8-merged-cnn-other-layout", VECTORFIND, MERGED, other_layout),
    Case("8-sample-shard-empty", VECTORFIND, SHARD, empty),
    Case("8-sample-shard-truncated", VECTORFIND, SHARD, truncated),
    Case("8-sample-shard-nan", VECTORFIND, SHARD, nan_in_arrays, "not finite numbers"),
    Case("8-sample-shard-other-run", VECTORFIND, SHARD, other_run_shard, "another run"),
    Case("8-geometry-shard-empty", VECTORFIND, GEOMETRY, empty),
    Case("8-geometry-shard-truncated", VECTORFIND, GEOMETRY, truncated),
    Case("8-geometry-shard-other-run", VECTORFIND, GEOMETRY, other_run_shard, "another run"),
    # stage 9, the evaluation: the grouping medians and the chosen directions
    Case("9-medians-missing", EVALUATE, MEDIANS, missing),
    Case("9-medians-empty", EVALUATE, MEDIANS, empty),
    Case("9-medians-cut-mid-row", EVALUATE, MEDIANS, truncated),
    Case("9-medians-renamed-column", EVALUATE, MEDIANS, renamed_column),
    # (the medians CSV's second data row holds the medians; the first, the means, is not read)
    Case("9-medians-not-a-number", EVALUATE, MEDIANS, partial(not_a_number, row=2), "finite number"),
    Case("9-medians-nan", EVALUATE, MEDIANS, partial(nan_value, row=2), "finite number"),
    Case("9-direction-missing", EVALUATE, DIRECTION, missing),
    Case("9-direction-empty", EVALUATE, DIRECTION, empty),
    Case("9-direction-nan", EVALUATE, DIRECTION, nan_value, "finite numbers"),
    # a resumed evaluation reads back the results it saved per case
    Case("9-case-result-empty", EVALUATE, CASE_RESULT, empty),
    Case("9-case-result-cut-mid-row", EVALUATE, CASE_RESULT, cut_mid_row),
    Case("9-case-result-renamed-column", EVALUATE, CASE_RESULT, renamed_column, "missing column"),
    Case("9-case-result-not-a-number", EVALUATE, CASE_RESULT, not_a_number, "finite number"),
    # the app: its generator, direction files and the evaluation's cases
    Case("app-v8-empty", APP, V8, empty),
    Case("app-v8-truncated", APP, V8, truncated),
    Case("app-v8-other-layout", APP, V8, other_layout),
    Case("app-direction-missing", APP, DIRECTION, missing),
    Case("app-direction-empty", APP, DIRECTION, empty),
    Case("app-direction-cut-mid-row", APP, DIRECTION, truncated),
    Case("app-direction-renamed-column", APP, DIRECTION, renamed_column),
    Case("app-direction-nan", APP, DIRECTION, nan_value, "finite numbers"),
    Case("app-test-result-cut-mid-row", APP, TEST_RESULT, cut_mid_row),
    Case("app-test-result-renamed-column", APP, TEST_RESULT, partial(renamed_column, column=2), "missing column"),
    Case("app-latents-cut-mid-row", APP, EVAL_LATENTS, cut_mid_row),
    Case("app-latents-renamed-column", APP, EVAL_LATENTS, renamed_column),
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
