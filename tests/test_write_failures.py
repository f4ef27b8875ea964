"""A write that fails (full disk, quota, read-only folder) stops a stage with one line, exit code 2, and leaves no
partial file: every file in the output root afterwards is either the complete old one or absent.

A full disk is simulated without privileges by a file-size limit on the stage process (RLIMIT_FSIZE): a write past
it fails with EFBIG, as a write on a full disk fails with ENOSPC (Python ignores SIGXFSZ, so the write raises).
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from common.fileio import load_image
from tests.conftest import ROOT


def run_limited(command: list[str], root: Path, limit_bytes: int) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, str(ROOT / command[0]), *command[1:], "--quick", "--output-root",
                           str(root)], cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=limit)


def assert_one_line_exit_2(done: subprocess.CompletedProcess) -> None:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and "could not write" in errors[0] and "Traceback" not in done.stderr, done.stderr[-2000:]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".tmp" in p.name]


def test_generation_on_a_full_disk_leaves_only_whole_files(tmp_path):
    root = tmp_path / "run"
    # 40 PNGs of ~8 KB fit under 100 KB each; the latent file (40 x 512 x 3 floats) does not
    done = run_limited(["run_original_generator.py", "--num-images", "40"], root, 100_000)
    assert_one_line_exit_2(done)
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
    assert_one_line_exit_2(done)
    assert not model.exists() and not leftovers(root)
    again = subprocess.run([sys.executable, str(ROOT / "run_property_score_cnn.py"), "--model", "seven", "--quick",
                            "--output-root", str(root)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    from property_score_cnn.scoring import load_property_cnn

    load_property_cnn(model, 64)
