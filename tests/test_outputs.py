"""`make clean-outputs` (common/outputs.py): OUTPUTS covers every file a quick run writes; cleaning removes exactly
those and keeps labels, saved edits and model files; every output is git-ignored in the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.outputs import KEPT, OUTPUTS, is_output
from tests.conftest import ROOT


def test_outputs_cover_every_file_of_a_quick_run(quick_embedded_root):
    files = [p.relative_to(quick_embedded_root).as_posix() for p in quick_embedded_root.rglob("*") if p.is_file()]
    uncovered = [rel for rel in files if not is_output(rel) and rel not in KEPT]
    assert len(files) > 1000 and not uncovered, uncovered[:20]


def test_clean_removes_outputs_and_keeps_labels_saved_edits_and_models(tmp_path):
    root = tmp_path / "run"
    outputs = ["stylegan/synthesize_results/000001.png", "cnn/models/gender_model_0.pth", "cnn/funnel.png",
               "stylegan_modified/stylegan_gen_fine_tuned_v1.pth", "stylegan/models/stylegan_gen_fine_tuned_v8.pth",
               "vectorfind/v8/samples/shard_0000000_0000500.npz", "reports/.in_progress", "runs/fine_tuning_v1/log.csv"]
    kept = ["cnn/synthesize_results_quality_and_gender.csv", "face_app/saved/edit.png",
            "stylegan/models/embedded_stylegan_64.pth", "stylegan/stylegan_model.pth", "segmentation/models/ckpt.pt",
            "vectorfind/settings.py"]
    for rel in outputs + kept:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    dry = subprocess.run([sys.executable, "-m", "common.outputs", "--dry-run", "--output-root", str(root)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and all((root / rel).exists() for rel in outputs), dry.stderr[-1500:]
    done = subprocess.run([sys.executable, "-m", "common.outputs", "--output-root", str(root)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert not [rel for rel in outputs if (root / rel).exists()]
    assert all((root / rel).is_file() for rel in kept)
    assert not (root / "reports").exists()  # a following run starts afresh instead of continuing a cleaned one


def test_every_output_is_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    samples = [pattern.replace("*", "gen") + ("" if "." in Path(pattern).name else "/file")
               for _, patterns in OUTPUTS for pattern in patterns]
    done = subprocess.run(["git", "check-ignore", "--no-index", *samples], cwd=ROOT, capture_output=True, text=True)
    ignored = set(done.stdout.split())
    assert not [s for s in samples if s not in ignored]
