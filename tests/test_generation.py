"""Stage 1: run_original_generator.py and the generation library."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.config import resolve_config
from common.errors import PipelineError
from common.fileio import load_image
from stylegan.checkpoint import load_generator, save_checkpoint
from stylegan.generate import (GeneratorConfig, batch_invariant, load_latent_file, regenerate, run_generation,
                              sample_latents)
from stylegan.stylegan_generator import StyleGANGenerator

ARCH = dict(resolution=16, fmaps_base=256, fmaps_max=32)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    g = StyleGANGenerator(**ARCH)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if not name.startswith("mapping."):
                p.add_(torch.randn_like(p) * 0.3)
        g.truncation.w_avg.normal_()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, generator=g, generator_smooth=g)
    return path


def make_config(tmp_path, checkpoint, **overrides):
    values = dict(checkpoint=str(checkpoint), checkpoint_entry="generator", num_images=6, batch_size=4, seed=3,
                  output_dir=str(tmp_path / "out"), **ARCH)
    values.update(overrides)
    return resolve_config(GeneratorConfig, "generator", profile="embedded", **values)


def read_images(folder, n, fmt="png"):
    return np.stack([load_image(folder / f"{i:06d}.{fmt}") for i in range(n)])


def test_images_depend_on_seed_and_index_only_not_batch_size(tmp_path, tiny_checkpoint):
    a = make_config(tmp_path / "a", tiny_checkpoint, batch_size=4)
    b = make_config(tmp_path / "b", tiny_checkpoint, batch_size=5)
    c = make_config(tmp_path / "c", tiny_checkpoint, batch_size=1, num_images=3)
    for cfg in (a, b, c):
        run_generation(cfg, device=torch.device("cpu"), progress=False)
    images_a = read_images(tmp_path / "a" / "out", 6)
    assert np.array_equal(images_a, read_images(tmp_path / "b" / "out", 6))
    assert np.array_equal(images_a[:3], read_images(tmp_path / "c" / "out", 3))
    assert len({img.tobytes() for img in images_a}) == 6  # distinct faces
    d = make_config(tmp_path / "d", tiny_checkpoint, seed=4)
    run_generation(d, device=torch.device("cpu"), progress=False)
    assert not np.array_equal(images_a, read_images(tmp_path / "d" / "out", 6))


def test_latent_file_regenerates_every_image_bit_identically(tmp_path, tiny_checkpoint):
    cfg = make_config(tmp_path, tiny_checkpoint, style_mixing_prob=0.5, trunc_psi=0.7, trunc_layers=3)
    run_generation(cfg, device=torch.device("cpu"), progress=False)
    latents = load_latent_file(tmp_path / "out" / "latents.npz")
    assert latents["z"].shape == (6, 512) and latents["w"].shape == (6, 512) and int(latents["seed"]) == 3
    assert (latents["mix_cut"] > 0).any() and (latents["mix_cut"] == 0).any()
    generator = load_generator(tiny_checkpoint, **ARCH)
    saved = read_images(tmp_path / "out", 6)
    for k in (0, 5):
        assert np.array_equal(regenerate(generator, latents, [k])[0], saved[k])
    with torch.inference_mode():
        w = batch_invariant(generator.mapping, torch.from_numpy(latents["z"]))
    np.testing.assert_array_equal(latents["w"], w.numpy())


def test_interrupted_run_resumes_and_rerun_skips(tmp_path, tiny_checkpoint):
    cfg = make_config(tmp_path, tiny_checkpoint)
    run_generation(cfg, device=torch.device("cpu"), progress=False)
    before = read_images(tmp_path / "out", 6)
    for i in (1, 4):
        (tmp_path / "out" / f"{i:06d}.png").unlink()
    (tmp_path / "out" / "latents.npz").unlink()
    summary = run_generation(cfg, device=torch.device("cpu"), progress=False)
    assert summary["generated"] == 2 and summary["skipped"] == 4
    assert np.array_equal(before, read_images(tmp_path / "out", 6))
    assert (tmp_path / "out" / "latents.npz").is_file()
    assert run_generation(cfg, device=torch.device("cpu"), progress=False)["generated"] == 0
    saved = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert saved["seed"] == 3 and saved["num_images"] == 6
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no temporary leftovers


def test_changing_the_seed_in_a_used_folder_needs_force(tmp_path, tiny_checkpoint):
    run_generation(make_config(tmp_path, tiny_checkpoint), device=torch.device("cpu"), progress=False)
    with pytest.raises(PipelineError, match="seed.*--force"):
        run_generation(make_config(tmp_path, tiny_checkpoint, seed=9), device=torch.device("cpu"), progress=False)
    summary = run_generation(make_config(tmp_path, tiny_checkpoint, seed=9), force=True,
                             device=torch.device("cpu"), progress=False)
    assert summary["generated"] == 6


def test_force_with_fewer_images_or_another_format_clears_the_stale_ones(tmp_path, tiny_checkpoint):
    run_generation(make_config(tmp_path, tiny_checkpoint), device=torch.device("cpu"), progress=False)
    out = tmp_path / "out"
    (out / "notes.txt").write_text("not an image of the stage")
    run_generation(make_config(tmp_path, tiny_checkpoint, num_images=3, image_format="jpg"), force=True,
                   device=torch.device("cpu"), progress=False)
    images = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".jpg"))
    assert images == ["000000.jpg", "000001.jpg", "000002.jpg"] and (out / "notes.txt").is_file()


def test_style_mixing_choices_are_seeded_per_image():
    a = sample_latents(1, range(50), 8, 10, 0.9)
    b = sample_latents(1, [7], 8, 10, 0.9)
    np.testing.assert_array_equal(a.z[7], b.z[0])
    assert a.mix_cut[7] == b.mix_cut[0]
    assert 0.75 < np.mean(a.mix_cut > 0) <= 1.0 and a.mix_cut.max() < 10
    assert (sample_latents(1, range(50), 8, 10, 0.0).mix_cut == 0).all()


def run_cli(repo_root, *args):
    return subprocess.run([sys.executable, str(repo_root / "run_original_generator.py"), *args],
                          capture_output=True, text=True, cwd=repo_root, timeout=120)


def test_cli_generates_and_reports(repo_root, tmp_path, tiny_checkpoint):
    out = tmp_path / "cli"
    result = run_cli(repo_root, "--checkpoint", str(tiny_checkpoint), "--resolution", "16", "--fmaps-base", "256",
                     "--fmaps-max", "32", "--num-images", "3", "--output-dir", str(out), "--image-format", "jpg",
                     "--checkpoint-entry", "generator_smooth")
    assert result.returncode == 0, result.stderr
    assert "generated 3 images" in result.stdout
    assert load_image(out / "000002.jpg").shape == (16, 16, 3)
    assert (tmp_path / "cli_grid.png").is_file() and load_image(tmp_path / "cli_grid.png").shape[0] > 16


@pytest.mark.parametrize("args, message", [
    (["--profile", "celeba256", "--checkpoint", "nowhere.pth"], "GenForce MODEL_ZOO"),
    (["--num-images", "many"], "--num-images 'many' must be int"),
    (["--image-format", "gif"], "image_format must be png or jpg"),
    (["--profile", "nosuch"], "unknown profile 'nosuch'"),
    (["--checkpoint-entry", "discriminator"], "checkpoint_entry must be"),
])
def test_cli_errors_are_one_line(repo_root, tmp_path, args, message):
    result = run_cli(repo_root, "--output-dir", str(tmp_path / "x"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
