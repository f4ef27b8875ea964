"""A write that fails (full disk, quota, read-only folder) stops a stage with one line, exit code 2, and leaves no
partial file: every file in the output root afterwards is either the complete old one or absent, and the same
command finishes once there is room.

A full disk is simulated without privileges by a file-size limit on the stage process (RLIMIT_FSIZE): a write past
it fails with EFBIG, as a write on a full disk fails with ENOSPC (Python ignores SIGXFSZ, so the write raises).

One test per stage that writes (1, 2, 3, 4, 5, 6 v1, 8 sampling), each in its own root holding a copy of only the
inputs it needs from the quick run. Stage 7 (the v8 dataset) is stages 1-4 run again on FineTune-v1's images, with
the same writing code, so it has no test of its own.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from common.checkpoints import read_weights
from common.fileio import load_image, read_csv_checked
from tests.conftest import ROOT


def run_limited(command: list[str], root: Path, limit_bytes: int) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, str(ROOT / command[0]), *command[1:], "--quick", "--output-root",
                           str(root)], cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=limit)


def assert_one_line_exit_2(done: subprocess.CompletedProcess, names: str = "") -> None:
    """Exit 2 and one `error: ` line saying the write failed (naming `names`, the file that did not fit)."""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and "could not write" in errors[0] and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert names in errors[0], errors[0]


def run_again(command: list[str], root: Path) -> None:
    """The same command with room again: it finishes."""
    done = subprocess.run([sys.executable, str(ROOT / command[0]), *command[1:], "--quick", "--output-root",
                           str(root)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".tmp" in p.name]


def assert_all_whole(root: Path) -> None:
    """No partial file (.tmp) is left, and every file of the root reads back whole by its kind."""
    assert not leftovers(root), leftovers(root)
    for path in root.rglob("*"):
        if not path.is_file() or path.name == ".ohlora.lock":
            continue
        if path.suffix == ".png":  # decoded in full (a class map is single-channel, so not load_image)
            assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED) is not None, path
        elif path.suffix == ".csv":
            read_csv_checked(path, "")
        elif path.suffix in (".pt", ".pth"):
            read_weights(path)
        elif path.suffix == ".npz":
            with np.load(path) as data:
                [data[k] for k in data.files]
        elif path.suffix == ".json":
            json.loads(path.read_text())


def copy_inputs(quick_root: Path, root: Path, *rels: str) -> None:
    for rel in rels:
        source, target = quick_root / rel, root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)


def digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_generation_on_a_full_disk_leaves_only_whole_files(tmp_path):
    root = tmp_path / "run"
    # 40 PNGs of ~8 KB fit under 100 KB each; the latent file (40 x 512 x 3 floats) does not
    done = run_limited(["run_original_generator.py", "--num-images", "40"], root, 100_000)
    assert_one_line_exit_2(done, "latents.npz")
    assert not leftovers(root)
    for path in (root / "stylegan/synthesize_results").glob("*.png"):
        assert load_image(path, 64).shape == (64, 64, 3)
    assert not (root / "stylegan/synthesize_results/latents.npz").exists()
    # with room again, the same command finishes the work
    again = subprocess.run([sys.executable, str(ROOT / "run_original_generator.py"), "--num-images", "40", "--quick",
                            "--output-root", str(root)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    with np.load(root / "stylegan/synthesize_results/latents.npz") as latents:
        assert latents["z"].shape == (40, 512)


def test_training_on_a_full_disk_leaves_no_partial_model_and_resumes(quick_embedded_root, tmp_path):
    """Stage 5 in its own root (a copy of its inputs from the quick run): the model write fails, nothing partial is
    left, and the same command finishes once there is room."""
    root = tmp_path / "run"
    for folder in ("segmentation/property_score_results", "stylegan/synthesize_results_filtered"):
        shutil.copytree(quick_embedded_root / folder, root / folder)
    model = root / "property_score_cnn/models/stylegan_gen_fine_tuned_v2_cnn.pth"
    size = (quick_embedded_root / model.relative_to(root)).stat().st_size
    done = run_limited(["run_property_score_cnn.py", "--model", "seven"], root, size // 2)
    assert_one_line_exit_2(done, model.name)
    assert not model.exists() and not leftovers(root)
    again = subprocess.run([sys.executable, str(ROOT / "run_property_score_cnn.py"), "--model", "seven", "--quick",
                            "--output-root", str(root)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    from property_score_cnn.scoring import load_property_cnn

    load_property_cnn(model, 64)


def test_filter_on_a_full_disk_keeps_the_old_scores_and_resumes(quick_embedded_root, tmp_path):
    """Stage 2 with its trained fold models and inference copied (so it only writes): the scores CSV that does not
    fit leaves the old one whole; with room, the same command writes the quick run's scores and kept images."""
    root = tmp_path / "run"
    copy_inputs(quick_embedded_root, root, "stylegan/synthesize_results", "cnn/synthesize_results_quality_and_gender.csv",
                "cnn/models", "cnn/log", "cnn/inference_result", "cnn/all_image_quality_and_gender.csv")
    scores = root / "cnn/all_image_quality_and_gender.csv"
    old = digest(scores)
    done = run_limited(["run_cnn.py"], root, scores.stat().st_size // 2)
    assert_one_line_exit_2(done, scores.name)
    assert_all_whole(root)
    assert digest(scores) == old
    run_again(["run_cnn.py"], root)
    assert digest(scores) == digest(quick_embedded_root / scores.relative_to(root))
    kept = sorted(p.name for p in (root / "stylegan/synthesize_results_filtered").iterdir())
    assert kept == sorted(p.name for p in (quick_embedded_root / "stylegan/synthesize_results_filtered").iterdir())


def test_segmentation_on_a_full_disk_leaves_only_whole_files(quick_embedded_root, tmp_path):
    """Stage 3 on 6 kept images: the face crops (~60 KB) do not fit; with room every image is done or skipped."""
    root = tmp_path / "run"
    images = sorted((quick_embedded_root / "stylegan/synthesize_results_filtered").glob("*.png"))[:6]
    copy_inputs(quick_embedded_root, root, *(p.relative_to(quick_embedded_root).as_posix() for p in images))
    done = run_limited(["run_segmentation.py"], root, 20_000)
    assert_one_line_exit_2(done, "/face_")
    assert_all_whole(root)
    run_again(["run_segmentation.py"], root)
    out = root / "segmentation/segmentation_results"
    skipped = out / "skipped_images.csv"
    skipped_nos = set(read_csv_checked(skipped, "")["img_no"]) if skipped.is_file() else set()
    for image in images:
        no = int(image.stem)
        done_files = [out / f"{kind}_{no:06d}.png" for kind in ("parsing", "face", "parsing_visualization")]
        assert all(p.is_file() for p in done_files) or no in skipped_nos, no
    assert_all_whole(root)


def test_property_scores_on_a_full_disk_keep_the_old_table_and_resume(quick_embedded_root, tmp_path):
    """Stage 4 (v1 scores) with the old table in place: the new table does not fit and the old one stays whole;
    with room the same command writes the quick run's table again."""
    root = tmp_path / "run"
    maps = [p for p in (quick_embedded_root / "segmentation/segmentation_results").iterdir()
            if p.name.startswith(("parsing_0", "parsing_1", "face_"))]
    copy_inputs(quick_embedded_root, root, "segmentation/property_score_results/all_scores.csv",
                *(p.relative_to(quick_embedded_root).as_posix() for p in maps))
    table = root / "segmentation/property_score_results/all_scores.csv"
    old = digest(table)
    done = run_limited(["compute_property_scores.py", "--algorithm", "v1"], root, table.stat().st_size // 2)
    assert_one_line_exit_2(done, table.name)
    assert_all_whole(root)
    assert digest(table) == old
    run_again(["compute_property_scores.py", "--algorithm", "v1"], root)
    assert digest(table) == digest(quick_embedded_root / table.relative_to(root))


def test_fine_tuning_on_a_full_disk_leaves_no_partial_state_and_resumes(quick_embedded_root, tmp_path):
    """Stage 6 (v1, 4 steps): its training state (~60 MB) does not fit under 1 MB; with room the same command trains
    to the end and exports FineTune-v1 (its monitor reads the stage-2 ensembles)."""
    root = tmp_path / "run"
    copy_inputs(quick_embedded_root, root, "stylegan/synthesize_results_filtered",
                "segmentation/property_score_results/all_scores_v2.csv", "cnn/models")
    command = ["run_stylegan_fine_tuning.py", "--version", "v1", "--max-steps", "4", "--checkpoint-every", "4"]
    done = run_limited(command, root, 1_000_000)
    assert_one_line_exit_2(done, "training_state.pt")
    assert_all_whole(root)
    assert not (root / "stylegan_modified/stylegan_gen_fine_tuned_v1.pth").exists()
    run_again(command, root)
    assert "generator_smooth" in read_weights(root / "stylegan_modified/stylegan_gen_fine_tuned_v1.pth")
    assert_all_whole(root)


def test_vectorfind_sampling_on_a_full_disk_leaves_only_whole_shards_and_resumes(quick_embedded_root, tmp_path):
    """Stage 8's sample phase at 200 samples: a shard (~210 KB) does not fit under 100 KB; with room the same
    command writes every shard, the landmark geometry and the medians."""
    root = tmp_path / "run"
    copy_inputs(quick_embedded_root, root, "stylegan/models/stylegan_gen_fine_tuned_v8.pth",
                "property_score_cnn/models/ohlora_v3_merged_property_cnn.pth")
    command = ["run_vectorfind.py", "sample", "--num-samples", "200", "--shard-size", "100",
               "--landmark-samples", "100"]
    done = run_limited(command, root, 100_000)
    assert_one_line_exit_2(done, "shard_0000000_0000100.npz")
    assert_all_whole(root)
    assert not list((root / "vectorfind/v8/samples").glob("shard_*.npz"))
    run_again(command, root)
    shards = sorted((root / "vectorfind/v8/samples").glob("shard_*.npz"))
    assert len(shards) == 2
    for shard in shards:
        with np.load(shard) as data:
            assert data["w"].shape == (100, 512) and np.isfinite(data["scores"]).all()
    assert (root / "vectorfind/v8_property_scores/property_scores_mean_and_median.csv").is_file()
    assert_all_whole(root)
