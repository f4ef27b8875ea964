"""`python run_pipeline.py --quick`: every stage of the embedded profile runs to the end at 64 px in its own output
root, writes complete outputs, and touches nothing of the repository's own (full-run) output folders.

The run itself is the session fixture `quick_embedded_root` (tests/conftest.py), shared with the kill-anywhere test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from common.locks import LOCK_NAME
from tests.conftest import ROOT, run_quick_pipeline


def _png_sizes(folder: Path, pattern: str = "*.png") -> set[tuple[int, int]]:
    sizes = set()
    for path in sorted(folder.glob(pattern)):
        with Image.open(path) as image:
            image.load()  # decodes the whole file: a truncated PNG fails here
            sizes.add(image.size)
    return sizes


def test_every_stage_writes_complete_outputs_at_64px(quick_embedded_root):
    root = quick_embedded_root
    # 1: every requested image and its latents
    assert len(list((root / "stylegan/synthesize_results").glob("*.png"))) == 1200
    with np.load(root / "stylegan/synthesize_results/latents.npz") as latents:
        assert {"z", "w", "seed"} <= set(latents.files) and latents["z"].shape == latents["w"].shape == (1200, 512)
    assert _png_sizes(root / "stylegan/synthesize_results") == {(64, 64)}
    # 2: fold models, scores for every unlabelled image, the kept images (decoded, 64 px)
    assert len(list((root / "cnn/models").glob("*_model_*.pt"))) == 4  # gender + quality, 2 folds
    scores = pd.read_csv(root / "cnn/all_image_quality_and_gender.csv")
    assert len(scores) == 1200 and scores[["gender_score", "quality_score"]].notna().all().all()
    kept = sorted((root / "stylegan/synthesize_results_filtered").glob("*.png"))
    assert len(kept) >= 50 and _png_sizes(root / "stylegan/synthesize_results_filtered") == {(64, 64)}
    # 3: a parse map and a face crop for every kept image that was not skipped
    seg = root / "segmentation/segmentation_results"
    parsed = sorted(seg.glob("parsing_[0-9]*.png"))
    skipped = pd.read_csv(seg / "skipped_images.csv")
    assert len(parsed) + len(skipped) == len(kept) and len(parsed) >= 0.7 * len(kept)
    assert len(list(seg.glob("face_*.png"))) == len(parsed)
    # 4: the three score tables over the parsed faces
    for name in ("all_scores.csv", "all_scores_v2.csv", "all_scores_ohlora_v3.csv"):
        table = pd.read_csv(root / "segmentation/property_score_results" / name, index_col=0)
        assert len(table) == len(parsed), name
    # 5: the seven-output, hairstyle and merged property CNNs
    for name in ("stylegan_gen_fine_tuned_v2_cnn.pth", "ohlora_v3_hairstyle_property_cnn.pth",
                 "ohlora_v3_merged_property_cnn.pth"):
        assert (root / "property_score_cnn/models" / name).stat().st_size > 0, name
    # 6: FineTune-v1 and v8 exported, loadable, drawing 64 px faces
    from common.config import resolve_config
    from stylegan_modified.config import FineTuneConfig
    from stylegan_modified.models import load_generator_file

    kwargs = resolve_config(FineTuneConfig, "fine_tuning", profile="embedded").generator_kwargs()
    for path in ("stylegan_modified/stylegan_gen_fine_tuned_v1.pth", "stylegan/models/stylegan_gen_fine_tuned_v8.pth"):
        generator = load_generator_file(root / path, "generator_smooth", **kwargs)
        with torch.inference_mode():
            image = generator(torch.randn(1, generator.z_space_dim), torch.zeros(1, 7))
        image = image["image"] if isinstance(image, dict) else image
        assert tuple(image.shape[-2:]) == (64, 64), path
    # 7: the v8 dataset: four ensembles (glass may be left out when scarce), kept images, hairstyle scores
    assert len(list((root / "stylegan/generated_face_images").glob("*.png"))) == 1000
    assert any((root / "stylegan/generated_face_images_filtered").glob("*.png"))
    assert (root / "segmentation/property_score_results_v8/all_scores_ohlora_v3.csv").is_file()
    # 8-9: one direction per property and group (3 x 16), the evaluation's statistics and images
    vectors = sorted((root / "vectorfind/v8/property_score_vectors").glob("*_change_w_vector_*.csv"))
    assert len(vectors) == 48
    from vectorfind.directions import read_direction

    assert all(np.isfinite(read_direction(path)).all() and read_direction(path).size == 512 for path in vectors)
    report = root / "vectorfind/v8/image_generation_report"
    assert len(pd.read_csv(report / "test_result.csv")) > 0
    assert _png_sizes(report / "test_0000") == {(64, 64)}
    # the run's report, in the run's own root
    assert (root / "reports/latest/index.html").is_file()
    assert not (root / LOCK_NAME).read_text().strip()  # released at the end


def test_quick_run_leaves_the_repository_outputs_alone(quick_embedded_root):
    """Nothing under the repository's own output folders is newer than the quick run's first file."""
    started = (quick_embedded_root / "stylegan/synthesize_results/generation_config.json").stat().st_mtime - 60
    finished = (quick_embedded_root / "reports/latest/index.html").stat().st_mtime + 1
    watched = ["stylegan", "cnn", "segmentation", "property_score_cnn", "stylegan_modified", "vectorfind", "runs",
               "reports", "face_app/saved"]
    touched = [path for folder in watched for path in (ROOT / folder).rglob("*")
               if path.is_file() and started <= path.stat().st_mtime <= finished
               and "__pycache__" not in path.parts and path.suffix != ".py"]
    assert not touched, touched[:5]


def test_a_second_run_on_the_same_root_stops_with_one_line(quick_embedded_root, tmp_path):
    """One run per folder: while a stage holds the root's lock, a second pipeline exits 2 naming the holder."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); from common.locks import "
         "hold_output_lock; hold_output_lock(sys.argv[2]); print('held', flush=True); time.sleep(60)",
         str(ROOT), str(quick_embedded_root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        second = run_quick_pipeline(quick_embedded_root, timeout=120)
        assert second.returncode == 2 and time.monotonic() - start < 30
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another run is writing in this folder" in lines[0]
        assert f"pid {holder.pid}" in lines[0] and "Traceback" not in second.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: the next run takes the lock over and, all work being done, finishes
    again = run_quick_pipeline(quick_embedded_root, "--restart", "--steps", "1_generate", timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "taking over the lock" in again.stdout
