"""The report's summary: numbers read from the stage outputs, shown before the stage-by-stage detail."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

from common.fileio import save_image
from common.report import NOT_RUN, SUMMARY, build_report

FIRST_SECTION = "<h2>1. Generated faces"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def summary_rows(page: str) -> dict[str, str]:
    """label -> value text of every summary row."""
    rows = re.findall(r"<tr><td>(.*?)</td><td class='value'>(.*?)</td>", page)
    return {html.unescape(label): html.unescape(re.sub(r"<[^>]+>", "", value)) for label, value in rows}


def partial_root(root: Path) -> None:
    """Some stages' outputs with known numbers; stage 7, FineTune-v8 and the v8 variety row are missing."""
    write(root / "cnn/all_image_quality_and_gender.csv",
          ",img_no,img_path,gender_score,quality_score\n"
          + "".join(f"{i},{i},x/{i:06d}.png,0.9,0.95\n" for i in range(7)))
    rng = np.random.default_rng(0)
    for no in (1, 4, 6):
        save_image(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                   root / f"stylegan/synthesize_results_filtered/{no:06d}.png")
    for no in (1, 6):
        save_image(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                   root / f"segmentation/segmentation_results/face_{no:06d}.png")
    # the lowest criterion is epoch 1, not the last one: its r are the saved model's
    write(root / "property_score_cnn/train_logs/train_log_v2_cnn.csv",
          "epoch,train_loss,valid_loss,criterion,eyes_score_loss,eyes_score_corr,mouth_score_loss,mouth_score_corr\n"
          "0,9,8,8.0,8,0.1111,8,0.2222\n1,5,4,3.5,4,0.8125,4,-0.4375\n2,4,5,4.25,5,0.5,5,0.25\n")
    write(root / "runs/generator_variety/generator_variety.csv",
          "generator,eye_opening_sd,eye_opening_sd_vs_base,mouth_opening_sd_vs_base,sharpness_vs_base\n"
          "base,0.04,1.0,1.0,1.0\nv1,0.03,0.75,1.25,0.5\n")
    write(root / "runs/fine_tuning_v1/summary.json",
          json.dumps({"step": 40, "train_seconds": 150.0, "images": 33, "finished": True}))
    write(root / "vectorfind/v8/image_generation_report/evaluation_summary.json", json.dumps({
        "cases": 20, "passed": 5, "pass_rate": 0.25, "thresholds": {"eyes": 0.92, "mouth": 0.88, "pose": 0.88},
        "mean_abs_corr": {"eyes": 0.6543, "mouth": 0.4321, "pose": 0.9876},
        "landmark_grading": {"cases": 4, "mean_abs_corr": {"eyes": 0.5555, "mouth": 0.4444, "pose": 0.3333},
                             "right_way": {"eyes": 0.75, "mouth": 1.0, "pose": 0.5}}}))
    write(root / "vectorfind/v8/directions_info.json", '{"settings": {"direction_kind": "condit')  # cut mid-write
    save_image(rng.integers(0, 255, (8, 40, 3), dtype=np.uint8), root / "vectorfind/v8/strips/strip_eyes.png")


def test_summary_shows_the_stage_numbers_before_the_first_stage_section(tmp_path):
    root, run_dir = tmp_path / "root", tmp_path / "reports" / "run1"
    partial_root(root)
    page = build_report(run_dir, "embedded", root=root).read_text()
    head = page[:page.index(FIRST_SECTION)]
    assert head.index("<h2>Summary</h2>") < head.index("<h2>Stage times and summaries</h2>")
    rows = summary_rows(head)
    assert rows["stage 2: images generated (scored by the filter)"] == "7"
    assert rows["stage 2: kept by the gender / quality filter"] == "3"
    assert rows["stage 3: faces found (face crops)"] == "2"
    assert rows["seven-property CNN"] == "epoch 1: eyes 0.812, mouth -0.438"
    assert rows["FineTune-v1 variety / base"] == "eye opening 0.75, mouth opening 1.25"  # SDs only, not sharpness
    assert rows["FineTune-v1 run"] == "40 steps, 2.5 min of training on 33 images"
    assert rows["graded by the property CNN: pass rate"].startswith("5 of 20 cases pass (25.0 %")
    assert rows["graded by the property CNN: mean |r| per property"] == "eyes 0.654, mouth 0.432, pose 0.988"
    assert rows["graded by landmarks: mean |r| per property"] == "eyes 0.555, mouth 0.444, pose 0.333 (4 cases)"
    assert rows["graded by landmarks: fraction edited the right way (r > 0)"] == \
        "eyes 0.75, mouth 1.00, pose 0.50 (4 cases)"
    # the file each number came from is named beside it, relative to the root
    assert "cnn/all_image_quality_and_gender.csv (data rows)" in head and str(root) not in head
    # missing files: not run yet; a file cut mid-write: not readable, and the page is still built
    for label in ("stage 7: v8 images generated (scored by the filter)", "hairstyle CNN", "FineTune-v8 run"):
        assert rows[label] == NOT_RUN
    assert rows["direction kind"].startswith("not readable (JSONDecodeError")
    assert rows["FineTune-v8 variety / base"] == "not readable (KeyError: 'no row with generator = v8')"
    # the edit strip is shown in the summary, copied into the run folder
    assert "<img src='assets/vectorfind__v8__strips__strip_eyes.png'" in head
    assert (run_dir / "assets/vectorfind__v8__strips__strip_eyes.png").read_bytes() == \
        (root / "vectorfind/v8/strips/strip_eyes.png").read_bytes()
    # the detail keeps its sections
    assert "<h2>8-9. VectorFind</h2>" in page and page.count("<h2>") == 2 + 8


def test_a_root_without_any_output_still_builds_and_says_not_run_yet(tmp_path):
    root, run_dir = tmp_path / "empty", tmp_path / "reports" / "run1"
    root.mkdir()
    page = build_report(run_dir, "embedded", root=root).read_text()
    head = page[:page.index(FIRST_SECTION)]
    rows = summary_rows(head)
    assert set(rows) == {fact.label for group in SUMMARY for fact in group.facts}
    assert set(rows.values()) == {NOT_RUN}
    assert "vectorfind/v8/strips/strip_*.png" in head and "<img " not in page
    assert page.count("no outputs of this stage yet") == 8
