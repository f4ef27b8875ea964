"""Stage 1 with a label-conditioned (fine-tuned) checkpoint: --label-mode zeros|normal|fixed; the base unchanged."""

import numpy as np
import pytest
import torch

from common.config import resolve_config
from common.errors import PipelineError
from common.fileio import load_image
from common.images import to_uint8
from stylegan.checkpoint import save_checkpoint
from stylegan.generate import GeneratorConfig, build_generator, load_latent_file, regenerate, run_generation
from stylegan.stylegan_generator import StyleGANGenerator

ARCH = dict(resolution=16, fmaps_base=256, fmaps_max=32)
BASE_KEYS = {"index", "z", "w", "mix_z", "mix_cut", "seed", "trunc_psi", "trunc_layers"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    torch.manual_seed(0)
    for name, label_size in (("base", 0), ("conditional", 7)):
        g = StyleGANGenerator(label_size=label_size, **ARCH)
        with torch.no_grad():
            for key, p in g.named_parameters():
                if not key.startswith("mapping."):
                    p.add_(torch.randn_like(p) * 0.3)
        save_checkpoint(root / f"{name}.pth", generator=g, generator_smooth=g)
    return root


def generate(root, checkpoint, out, **overrides):
    values = dict(checkpoint=str(root / checkpoint), checkpoint_entry="generator", num_images=5, batch_size=2,
                  seed=4, output_dir=str(out), **ARCH)
    values.update(overrides)
    config = resolve_config(GeneratorConfig, "generator", profile="embedded", **values)
    run_generation(config, device=torch.device("cpu"), progress=False)
    images = np.stack([load_image(out / f"{i:06d}.png") for i in range(5)])
    return config, images, load_latent_file(out / "latents.npz")


def test_base_generator_output_and_latent_file_are_unchanged(checkpoints, tmp_path):
    config, images, latents = generate(checkpoints, "base.pth", tmp_path / "base", label_mode="normal")
    assert set(latents) == BASE_KEYS  # no label keys for an unconditioned generator
    generator = build_generator(config, torch.device("cpu"))
    assert generator.label_size == 0
    with torch.inference_mode():
        expected = to_uint8(generator(torch.from_numpy(latents["z"][:4]))["image"])
    assert np.array_equal(images[:4], expected)


def test_label_modes_are_saved_seeded_and_regenerate_exactly(checkpoints, tmp_path):
    _, base_images, base_latents = generate(checkpoints, "base.pth", tmp_path / "base")
    config, normal, latents = generate(checkpoints, "conditional.pth", tmp_path / "normal", label_mode="normal")
    assert latents["label"].shape == (5, 7) and str(latents["label_mode"]) == "normal"
    assert np.array_equal(latents["z"], base_latents["z"])  # labels have their own stream
    assert len({row.tobytes() for row in latents["label"]}) == 5
    _, again, latents_again = generate(checkpoints, "conditional.pth", tmp_path / "again", label_mode="normal",
                                       batch_size=3)
    assert np.array_equal(normal, again) and np.array_equal(latents["label"], latents_again["label"])
    generator = build_generator(config, torch.device("cpu"))
    assert generator.label_size == 7
    assert np.array_equal(regenerate(generator, latents, [1, 4]), normal[[1, 4]])
    _, zeros, zero_latents = generate(checkpoints, "conditional.pth", tmp_path / "zeros")
    assert float(np.abs(zero_latents["label"]).sum()) == 0.0 and not np.array_equal(zeros, normal)
    value = [0, 0, 3, 0, 0, 0, 0]
    _, fixed, fixed_latents = generate(checkpoints, "conditional.pth", tmp_path / "fixed", label_mode="fixed",
                                       label_value=value)
    assert (fixed_latents["label"] == np.float32(value)).all() and not np.array_equal(fixed, zeros)
    with pytest.raises(PipelineError, match="label_value has 2 entries"):
        generate(checkpoints, "conditional.pth", tmp_path / "bad", label_mode="fixed", label_value=[1.0, 2.0])
    with pytest.raises(PipelineError, match="label_mode fixed needs"):
        generate(checkpoints, "conditional.pth", tmp_path / "bad2", label_mode="fixed")
    with pytest.raises(PipelineError, match="different label_mode"):
        generate(checkpoints, "conditional.pth", tmp_path / "zeros", label_mode="normal")
