"""The real system end to end at 256 px: `run_pipeline.py --profile celeba256 --quick --stand-in-weights`.

One quick run (stand-in StyleGAN and FaceXFormer checkpoints, the annotator's labels, quick sizes) in a temporary
output root, shared by the tests of this module; about 12 minutes on 2 CPU cores, so it is the longest test of
`make test`. It checks that every stage wrote complete outputs at 256 px, that the stand-ins are refused in the
repository (where downloaded checkpoints go), and that the GPU bench runs at quick sizes on a CPU.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 40 * 60
RESOLUTION = 256


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OHLORA_")}


def _run(args: list[str], timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_root(tmp_path_factory) -> Path:
    """The finished quick run. TEST_CELEBA256_ROOT=DIR reuses one (while working on these tests)."""
    given = os.environ.get("TEST_CELEBA256_ROOT")
    if given:
        return Path(given).resolve()
    root = tmp_path_factory.mktemp("celeba256_quick")
    result = _run(["run_pipeline.py", "--profile", "celeba256", "--quick", "--stand-in-weights",
                   "--output-root", str(root)])
    if result.returncode != 0:
        pytest.fail(f"quick celeba256 run failed (exit {result.returncode}):\n{result.stdout[-4000:]}\n"
                    f"{result.stderr[-4000:]}")
    assert "STAND-IN WEIGHTS" in result.stdout and "NO real quality" in result.stdout
    return root


def _sizes(folder: Path, pattern: str) -> set[tuple[int, int]]:
    files = sorted(folder.glob(pattern))
    assert files, f"no {pattern} in {folder}"
    sizes = set()
    for path in files:
        with Image.open(path) as image:
            sizes.add(image.size)
    return sizes


def _csv_rows(path: Path) -> list[dict]:
    assert path.is_file(), path
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, f"{path} has no rows"
    return rows


def test_generation_and_filter_at_256(quick_root):
    generated = quick_root / "stylegan/synthesize_results"
    assert _sizes(generated, "[0-9]*.png") == {(RESOLUTION, RESOLUTION)}
    assert (generated / "latents.npz").is_file()
    assert len(list(generated.glob("[0-9]*.png"))) == json.loads((generated / "generation_config.json").read_text())[
        "num_images"]
    assert _sizes(quick_root / "stylegan/synthesize_results_filtered", "*.png") == {(RESOLUTION, RESOLUTION)}
    assert len(_csv_rows(quick_root / "cnn/all_image_quality_and_gender.csv")) == len(list(generated.glob("[0-9]*.png")))
    assert sorted(p.name for p in (quick_root / "cnn/models").glob("*_model_*.pt"))


def test_segmentation_and_scores(quick_root):
    for results, filtered in (("segmentation/segmentation_results", "stylegan/synthesize_results_filtered"),
                              ("segmentation/segmentation_results_v8", "stylegan/generated_face_images_filtered")):
        folder = quick_root / results
        faces, maps = sorted(folder.glob("face_*.png")), sorted(folder.glob("parsing_[0-9]*.png"))
        assert faces and len(faces) == len(maps)
        assert _sizes(folder, "face_*.png") == {(224, 224)}  # FaceXFormer's crop size, cut from the 256 px image
        assert _sizes(folder, "parsing_[0-9]*.png") == {(224, 224)}
        assert _sizes(quick_root / filtered, "*.png") == {(RESOLUTION, RESOLUTION)}
    scores = quick_root / "segmentation/property_score_results"
    for name in ("all_scores.csv", "all_scores_v2.csv", "all_scores_ohlora_v3.csv"):
        assert len(_csv_rows(scores / name)) > 0
    assert _csv_rows(quick_root / "segmentation/property_score_results_v8/all_scores_ohlora_v3.csv")


def test_property_cnns(quick_root):
    from property_score_cnn.scoring import load_property_cnn, score_images

    models = quick_root / "property_score_cnn/models"
    for name in ("stylegan_gen_fine_tuned_v2_cnn.pth", "ohlora_v3_hairstyle_property_cnn.pth",
                 "ohlora_v3_merged_property_cnn.pth"):
        assert (models / name).is_file(), name
    merged = load_property_cnn(models / "ohlora_v3_merged_property_cnn.pth", RESOLUTION)
    scores = score_images(merged, np.zeros((2, RESOLUTION, RESOLUTION, 3), np.uint8), device="cpu")
    assert tuple(scores.shape) == (2, 8)
    assert _csv_rows(quick_root / "segmentation/property_score_results/all_scores_v2_cnn.csv")


def test_fine_tuned_exports_load(quick_root):
    import torch

    from common.config import resolve_config
    from stylegan_modified.config import FineTuneConfig
    from stylegan_modified.models import load_generator_file

    kwargs = resolve_config(FineTuneConfig, "fine_tuning", profile="celeba256").generator_kwargs()
    for path in ("stylegan_modified/stylegan_gen_fine_tuned_v1.pth", "stylegan/models/stylegan_gen_fine_tuned_v8.pth"):
        generator = load_generator_file(quick_root / path, **kwargs)
        with torch.inference_mode():
            image = generator(torch.zeros(1, generator.z_space_dim), torch.zeros(1, generator.label_size))["image"]
        assert tuple(image.shape) == (1, 3, RESOLUTION, RESOLUTION)
        assert torch.isfinite(image).all()
    for path in ("stylegan_modified/stylegan_dis_fine_tuned_v1.pth", "stylegan/models/stylegan_dis_fine_tuned_v8.pth"):
        assert (quick_root / path).is_file()


def test_vectorfind_and_report(quick_root):
    from vectorfind.directions import GROUP_NAMES, load_directions

    out = quick_root / "vectorfind/v8"
    for kind in ("property_score_vectors", "property_score_vectors_plain", "property_score_vectors_conditional"):
        for group in GROUP_NAMES:
            directions = load_directions(out / kind, group)
            assert set(directions) == {"eyes", "mouth", "pose"}
            assert all(v.shape == (512,) and np.isfinite(v).all() for v in directions.values())
    assert _csv_rows(out / "svm_accuracy.csv")
    assert _csv_rows(out / "image_generation_report/test_result.csv")
    assert (out / "vectorfind_summary.json").is_file() and (out / "summary.png").is_file()
    index = quick_root / "reports/latest/index.html"
    assert index.is_file() and "celeba256" in index.read_text()
    times = _csv_rows(quick_root / "reports/latest/stage_times.csv")
    assert {row["step"] for row in times} >= {"1_generate", "3_segmentation", "6_fine_tune_v8", "8_9_vectorfind"}


def test_stand_ins_refused_at_the_repository():
    model = ROOT / "stylegan/stylegan_model.pth"
    existed = model.exists()
    result = _run(["run_pipeline.py", "--profile", "celeba256", "--stand-in-weights"], timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --stand-in-weights") and "--output-root" in lines[0]
    assert model.exists() == existed


def test_gpu_bench_at_quick_sizes_on_cpu(quick_root):
    result = _run(["bench/gpu_celeba256.py", "--quick", "--output-root", str(quick_root)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "per-stage times" in result.stdout
    table = _csv_rows(quick_root / "reports/latest/gpu_celeba256.csv")
    steps = {row["step"]: row for row in table}
    assert {"1_generate", "2_cnn_filter", "3_segmentation", "8_9_vectorfind", "total"} <= set(steps)
    assert int(steps["1_generate"]["images"]) > 0
