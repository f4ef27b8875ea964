"""The embedded profile's base model: the DCGAN teacher, the distillation trainer, the shipped checkpoint."""

import dataclasses

import pandas as pd
import pytest
import torch

from common.config import REPO_ROOT, resolve_config
from stylegan.checkpoint import load_generator, read_checkpoint
from stylegan.distillation import DistillationConfig, Distiller, multiscale_l1, train
from stylegan.generate import GeneratorConfig
from stylegan.teacher_dcgan import load_teacher, sample_teacher_images


def test_teacher_loads_and_makes_64px_faces_in_range():
    images = sample_teacher_images(4, seed=1)
    assert images.shape == (4, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.2
    assert torch.equal(images, sample_teacher_images(4, seed=1))
    assert not load_teacher().training


def tiny_config(run_dir, **overrides):
    values = dict(run_dir=str(run_dir), fmaps_base=256, fmaps_max=16, mapping_layers=2, batch_size=4, lr=0.01,
                  adversarial_start_step=1000, r1_interval=2, log_every=2, sample_every=1000, checkpoint_every=1000,
                  threads=2, seed=5, total_steps=1000, progressive_start_lod=0.0)
    values.update(overrides)
    return DistillationConfig(**values)


def test_multiscale_l1_is_zero_for_equal_images_and_sees_coarse_errors():
    x = torch.rand(2, 3, 8, 8)
    assert float(multiscale_l1(x, x)) == 0.0
    assert float(multiscale_l1(x + 0.5, x)) == pytest.approx(0.5)


def test_paired_regression_reduces_the_distillation_loss(tmp_path):
    distiller = Distiller(tiny_config(tmp_path))
    before = distiller.ema_paired_l1(num=32)
    for _ in range(25):
        distiller.step()
    distiller.generator_smooth.load_state_dict(distiller.generator.state_dict())
    assert distiller.ema_paired_l1(num=32) < 0.8 * before


def test_training_resumes_to_exactly_the_same_state(tmp_path):
    cfg = dict(adversarial_start_step=2, total_steps=6, checkpoint_every=3)
    straight = train(tiny_config(tmp_path / "a", **cfg), progress=False)
    train(tiny_config(tmp_path / "b", **cfg), max_steps=3, progress=False)
    resumed = train(tiny_config(tmp_path / "b", **cfg), progress=False)  # picks up at step 3
    assert resumed.step_index == straight.step_index == 6
    for name in ("generator", "discriminator", "generator_smooth"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    log = pd.read_csv(tmp_path / "b" / "train_log.csv")
    assert log["step"].tolist() == [2, 3, 4, 6]  # every log_every steps and at each stop
    assert log["d_loss"].notna().tolist() == [False, True, True, True]  # adversarial from step 2 on
    assert (tmp_path / "b" / "samples_000006.png").is_file()


def test_export_is_a_strict_genforce_checkpoint(tmp_path):
    config = tiny_config(tmp_path)
    distiller = Distiller(config)
    distiller.export(tmp_path / "model.pth")
    assert set(read_checkpoint(tmp_path / "model.pth")) == {"generator", "discriminator", "generator_smooth"}
    generator = load_generator(tmp_path / "model.pth", "generator_smooth", **config.generator_kwargs())
    assert generator(torch.randn(2, 512))["image"].shape == (2, 3, 64, 64)
    # A new run can continue from the exported weights (e.g. in a later session).
    continued = Distiller(tiny_config(tmp_path / "next", seed=6))
    continued.load_weights(tmp_path / "model.pth", step=40)
    assert continued.step_index == 40 and continued.images_seen == 160
    expected = distiller.generator.state_dict()["synthesis.layer3.weight"].half().float()
    assert torch.equal(continued.generator.state_dict()["synthesis.layer3.weight"], expected)


def test_shipped_embedded_checkpoint_loads_strictly_and_generates():
    config = resolve_config(GeneratorConfig, "generator", profile="embedded")
    path = REPO_ROOT / config.checkpoint
    if not path.is_file():
        pytest.skip(f"{config.checkpoint} not trained yet")
    assert path.stat().st_size <= 25 * 2**20
    distill_defaults = DistillationConfig()
    assert (config.fmaps_base, config.fmaps_max) == (distill_defaults.fmaps_base, distill_defaults.fmaps_max)
    for entry in ("generator", "generator_smooth"):
        generator = load_generator(path, entry, **config.generator_kwargs())
        with torch.inference_mode():
            image = generator(torch.randn(4, 512))["image"]
        assert image.shape == (4, 3, 64, 64) and torch.isfinite(image).all()
        assert 0.05 < float(image.std()) < 2.0
    assert dataclasses.is_dataclass(distill_defaults)


def test_student_starts_blind_to_the_z_entries_the_teacher_never_sees(tmp_path):
    generator = Distiller(tiny_config(tmp_path)).generator.eval()
    z = torch.randn(2, 512)
    z_other = z.clone()
    z_other[:, 100:] = torch.randn(2, 412)
    with torch.no_grad():
        w, w_other = generator.mapping(z), generator.mapping(z_other)
    # Only the pixel-norm scale of z changes: w moves far less than for a new teacher noise.
    z_new = z.clone()
    z_new[:, :100] = torch.randn(2, 100)
    with torch.no_grad():
        w_new = generator.mapping(z_new)
    assert (w - w_other).abs().mean() < 0.2 * (w - w_new).abs().mean()
    assert float(generator.mapping.dense0.weight[:, 100:].abs().max()) == 0.0


def test_progressive_schedule_holds_fades_and_ends_at_full_resolution(tmp_path):
    distiller = Distiller(tiny_config(tmp_path, progressive_start_lod=2.0, lod_stable_images=100,
                                      lod_transition_images=50, progressive_start_images=1000))
    expected = {0: 2.0, 1000: 2.0, 1099: 2.0, 1125: 1.5, 1150: 1.0, 1249: 1.0, 1275: 0.5, 1300: 0.0, 10**6: 0.0}
    for images, lod in expected.items():
        distiller.images_seen = images
        assert distiller.current_lod() == pytest.approx(lod), images
    assert Distiller(tiny_config(tmp_path)).current_lod() == 0.0  # progressive_start_lod 0: full size throughout


def test_coarse_phase_trains_only_the_coarse_layers_and_the_mapping_fast(tmp_path):
    distiller = Distiller(tiny_config(tmp_path, progressive_start_lod=2.0, mapping_lr_scale=100.0))
    groups = distiller.g_optimizer.param_groups
    assert [g["lr"] for g in groups] == [pytest.approx(0.01), pytest.approx(1.0)]
    assert all(p is q for p, q in zip(groups[1]["params"], distiller.generator.mapping.parameters()))
    before = {k: v.clone() for k, v in distiller.generator.state_dict().items()}
    distiller.step()
    after = distiller.generator.state_dict()
    # 64 px with lod 2 renders at 16 px: blocks 3 and 4 (32 and 64 px: layers 6-9, output3/4) are skipped
    for name in ("synthesis.layer6.weight", "synthesis.layer9.weight", "synthesis.output4.weight"):
        assert torch.equal(before[name], after[name]), name
    for name in ("synthesis.layer1.weight", "synthesis.layer5.weight", "synthesis.output2.weight",
                 "mapping.dense1.weight"):
        assert not torch.equal(before[name], after[name]), name
    assert float(after["synthesis.lod"]) == 2.0
    assert float(distiller.generator_smooth.state_dict()["synthesis.lod"]) == 2.0
