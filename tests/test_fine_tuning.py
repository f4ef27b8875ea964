"""Stage 6: FineTune-v1 / v8 (stylegan_modified/) and the shared GAN trainer pieces, on tiny models."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from common.config import REPO_ROOT
from common.checkpoints import read_weights, save_weights
from common.errors import PipelineError
from common.fileio import save_image
from stylegan.checkpoint import save_checkpoint
from stylegan.gan_trainer import r1_penalty, real_fake_auroc
from stylegan.stylegan_discriminator import StyleGANDiscriminator
from stylegan.stylegan_generator import StyleGANGenerator
from stylegan_modified.config import PROPERTY_COLUMNS, FineTuneConfig
from stylegan_modified.dataset import load_dataset
from stylegan_modified.models import last_discriminator_layers, load_generator_file
from stylegan_modified.stage import run_fine_tuning
from stylegan_modified.trainer import FineTuner

ARCH = dict(resolution=16, z_space_dim=32, w_space_dim=32, mapping_layers=2, mapping_fmaps=32, fmaps_base=256,
            fmaps_max=32)
IMG_NOS = [3, 5, 8, 13, 21, 34, 55, 89]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An unconditioned tiny base checkpoint and a 16 px dataset of 8 images with stage-4-like labels."""
    root = tmp_path_factory.mktemp("ft")
    torch.manual_seed(0)
    g = StyleGANGenerator(**{k: v for k, v in ARCH.items()})
    d = StyleGANDiscriminator(16, fmaps_base=256, fmaps_max=32)
    save_checkpoint(root / "base.pth", g, d, g)
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for n in IMG_NOS:
        save_image(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), root / "images" / f"{n:06d}.png")
    labels = pd.DataFrame({"img_no": IMG_NOS, "img_path": [f"crops/face_{n:06d}.png" for n in IMG_NOS],
                           **{c: rng.standard_normal(len(IMG_NOS)).round(4) for c in PROPERTY_COLUMNS}})
    labels.to_csv(root / "all_scores_v2.csv")
    return root


def tiny_config(root, run="run", **overrides):
    values = dict(ARCH, init_checkpoint=str(root / "base.pth"), init_entry="generator", images_dir=str(root / "images"),
                  labels_csv=str(root / "all_scores_v2.csv"), trainable_discriminator=last_discriminator_layers(16),
                  batch_size=4, minibatch_std_group_size=4, max_steps=4, log_every=1, checkpoint_every=2,
                  preview_num_z=2, monitor_every=2, monitor_samples=4, num_threads=1, learning_rate=1e-3,
                  run_dir=str(root / run), export_generator=str(root / run / "gen_v1.pth"),
                  export_discriminator=str(root / run / "dis_v1.pth"), seed=3,
                  # the original recipe these tests were written against (the config's defaults are the embedded
                  # profile's since)
                  dense0_init="fresh", mapping_lr_scale=1.0, mapping_bias_lr_scale=1.0, weight_decay=0.01,
                  r1_interval=1, w_spread_weight=0.0, ema_half_life_images=10000.0, max_minutes=0.0)
    values.update(overrides)
    config = FineTuneConfig(**values)
    config.validate()
    return config


def test_v1_starts_from_the_base_with_only_the_new_tensors_fresh(base):
    trainer = FineTuner(tiny_config(base), load_dataset(base / "images", base / "all_scores_v2.csv", 16))
    base_state = read_weights(base / "base.pth")
    g, d = trainer.generator.state_dict(), trainer.discriminator.state_dict()
    assert tuple(g["mapping.label_weight"].shape) == (7, 16)
    assert tuple(g["mapping.dense0.weight"].shape) == (32, 32 + 16)
    assert torch.equal(g["mapping.dense0.bias"], base_state["generator"]["mapping.dense0.bias"])
    fresh_g = {"mapping.label_weight", "mapping.dense0.weight"}
    assert set(g) - set(base_state["generator"]) == {"mapping.label_weight"}
    assert all(torch.equal(g[k], v) for k, v in base_state["generator"].items() if k not in fresh_g)
    assert last_discriminator_layers(16) == ["layer4", "layer5", "layer6"]  # 256 px: layer12-14
    assert tuple(d["layer6.weight"].shape) == (1, 32 + 7)
    assert all(torch.equal(d[k], v) for k, v in base_state["discriminator"].items() if k != "layer6.weight")
    assert trainer.discriminator.layer4.group_size == 4  # ctor argument (16 in the profiles)
    assert set(trainer.g_trainable) == {n for n in g if n.startswith("mapping.")}
    assert {n.split(".")[0] for n in trainer.d_trainable} == {"layer4", "layer5", "layer6"}
    # dense0_init = pretrained keeps the base's z columns (label columns start at 0)
    kept = FineTuner(tiny_config(base, dense0_init="pretrained"), trainer.dataset).generator.state_dict()
    assert torch.equal(kept["mapping.dense0.weight"][:, :32], base_state["generator"]["mapping.dense0.weight"])
    assert float(kept["mapping.dense0.weight"][:, 32:].abs().max()) == 0.0


@pytest.mark.parametrize("version", ["v1", "v8"])
def test_exactly_the_named_parameters_change_in_a_step(base, version):
    config = tiny_config(base)
    dataset = load_dataset(base / "images", base / "all_scores_v2.csv", 16)
    if version == "v8":
        FineTuner(config, dataset).export(base / "v1_gen.pth", base / "v1_dis.pth")
        config = tiny_config(base, version="v8", init_checkpoint=str(base / "v1_gen.pth"),
                             init_discriminator=str(base / "v1_dis.pth"), labels="zeros",
                             trainable_generator=["mapping", "synthesis.layer0", "synthesis.layer1",
                                                  "synthesis.output0"])
        dataset = load_dataset(base / "images", "", 16)
        assert float(dataset.labels.abs().sum()) == 0.0
    trainer = FineTuner(config, dataset)
    before = {name: {k: v.clone() for k, v in getattr(trainer, name).state_dict().items()}
              for name in ("generator", "discriminator", "generator_smooth")}
    trainer.step()
    g_names = {"v1": ("mapping.",), "v8": ("mapping.", "synthesis.layer0.", "synthesis.layer1.",
                                          "synthesis.output0.")}[version]
    params = dict(trainer.generator.named_parameters())
    for name in ("generator", "generator_smooth"):
        after = getattr(trainer, name).state_dict()
        for key in params:
            changed = not torch.equal(before[name][key], after[key])
            # output0 (the 4x4 toRGB) is trainable as in the original, but at lod 0 it is off the image path:
            # no gradient reaches it, so it stays as loaded (the original's also did)
            trained = key.startswith(g_names) and not key.startswith("synthesis.output0.")
            if name == "generator":
                assert changed == trained, key
            else:  # the EMA moves by (1 - beta) x the step: a frozen tensor must stay bit-identical
                assert not changed or trained, key
    d_after = trainer.discriminator.state_dict()
    for key, _ in trainer.discriminator.named_parameters():
        changed = not torch.equal(before["discriminator"][key], d_after[key])
        assert changed == (key.split(".")[0] in ("layer4", "layer5", "layer6")), key
    lr = [g["lr"] for g in trainer.g_optimizer.param_groups]
    trainer.step()
    assert [g["lr"] for g in trainer.g_optimizer.param_groups] == lr  # no schedule unless asked


def test_cosine_schedule_only_when_asked_and_then_stepped_per_epoch(base):
    dataset = load_dataset(base / "images", base / "all_scores_v2.csv", 16)
    trainer = FineTuner(tiny_config(base, cosine_t_max=4), dataset)  # 2 steps per epoch
    lrs = []
    for _ in range(4):
        trainer.step()
        lrs.append(trainer.d_optimizer.param_groups[0]["lr"])
    assert lrs[0] == 1e-3 and lrs[1] < lrs[0] and lrs[2] == lrs[1] and lrs[3] < lrs[2]


def test_r1_penalty_matches_autograd_on_a_toy_discriminator():
    torch.manual_seed(0)
    toy = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    real = torch.randn(3, 3, 2, 2, dtype=torch.float64)
    expected = torch.stack([torch.autograd.functional.jacobian(lambda x: toy(x[None]).sum(), r).square().sum()
                            for r in real]).mean()
    r1 = r1_penalty(toy, real)
    assert torch.allclose(r1, expected, rtol=1e-5)
    # differentiable w.r.t. D's weights: compare with a finite difference on one weight
    (grad,) = torch.autograd.grad(r1, toy[1].weight)
    eps = 1e-3
    with torch.no_grad():
        toy[1].weight[2, 4] += eps
    up = float(r1_penalty(toy, real).detach())
    with torch.no_grad():
        toy[1].weight[2, 4] -= 2 * eps
    down = float(r1_penalty(toy, real).detach())
    assert (up - down) / (2 * eps) == pytest.approx(float(grad[2, 4]), rel=1e-2)
    assert real_fake_auroc(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.875)


def brightness(images):
    return images.float().mean(dim=(1, 2, 3)).numpy() / 255.0


def test_killed_run_resumes_to_the_uninterrupted_weights_and_logs(base):
    straight = run_fine_tuning(tiny_config(base, "a"), {"bright": brightness}, progress=False, log=lambda m: None)
    partial = run_fine_tuning(tiny_config(base, "b"), {"bright": brightness}, progress=False, max_new_steps=2,
                              log=lambda m: None)
    assert partial.step == 2 and not partial.finished and not partial.exported
    resumed = run_fine_tuning(tiny_config(base, "b"), {"bright": brightness}, progress=False, log=lambda m: None)
    assert straight.step == resumed.step == 4 and resumed.finished
    a, b = read_weights(base / "a" / "training_state.pt"), read_weights(base / "b" / "training_state.pt")
    for name in ("generator", "discriminator", "generator_smooth"):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    log_a, log_b = pd.read_csv(base / "a" / "train_log.csv"), pd.read_csv(base / "b" / "train_log.csv")
    assert log_a["step"].tolist() == log_b["step"].tolist() == [0, 1, 2, 3, 4]  # 0: the monitor before training
    columns = {"epoch", "idx", "d_loss", "g_loss", "g_train_count", "real_scores_mean", "fake_scores_mean",
               "real_fake_auroc", "mean_bright_score"}
    assert columns <= set(log_b.columns)
    pd.testing.assert_frame_equal(log_a.drop(columns="train_seconds"), log_b.drop(columns="train_seconds"))
    assert log_b["mean_bright_score"].notna().tolist() == [True, False, True, False, True]
    assert log_b["g_train_count"].iloc[1:].between(1, 4).all()
    assert (base / "b" / "preview_000004.png").is_file() and (base / "b" / "train_curves.png").is_file()


def test_export_round_trip_and_the_original_plain_state_dict_files(base):
    config = tiny_config(base, "export")
    trainer = FineTuner(config, load_dataset(base / "images", base / "all_scores_v2.csv", 16))
    trainer.step()
    trainer.export(config.export_generator, config.export_discriminator)
    assert set(read_weights(config.export_generator)) == {"generator", "discriminator", "generator_smooth"}
    assert set(read_weights(config.export_discriminator)) == {"discriminator"}
    kwargs = config.generator_kwargs()
    for entry in ("generator", "generator_smooth"):
        loaded = load_generator_file(config.export_generator, entry, **kwargs).state_dict()
        expected = getattr(trainer, entry).state_dict()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), entry
    # v8 starts strictly from v1's files, in our layout or as the original's plain state dicts
    save_weights(base / "plain_gen.pth", trainer.generator.state_dict())
    save_weights(base / "plain_dis.pth", trainer.discriminator.state_dict())
    for gen, dis in ((config.export_generator, config.export_discriminator),
                     (base / "plain_gen.pth", base / "plain_dis.pth")):
        v8 = FineTuner(tiny_config(base, version="v8", init_checkpoint=str(gen), init_discriminator=str(dis),
                                   labels="zeros"), load_dataset(base / "images", "", 16))
        assert all(torch.equal(v, trainer.generator.state_dict()[k]) for k, v in v8.generator.state_dict().items())
        assert all(torch.equal(v, trainer.discriminator.state_dict()[k])
                   for k, v in v8.discriminator.state_dict().items())


def test_bad_inputs_are_one_line_errors(base, tmp_path):
    with pytest.raises(PipelineError, match="dataset folder not found"):
        load_dataset(tmp_path / "nowhere", base / "all_scores_v2.csv", 16)
    with pytest.raises(PipelineError, match="labels CSV not found"):
        load_dataset(base / "images", tmp_path / "none.csv", 16)
    table = pd.read_csv(base / "all_scores_v2.csv", index_col=0)
    table.loc[len(table)] = [777, "x.png", *[0.0] * 7]
    table.to_csv(tmp_path / "extra.csv")
    with pytest.raises(PipelineError, match=r"does not match the images: 1 of 9 rows have no image .*000777"):
        load_dataset(base / "images", tmp_path / "extra.csv", 16)
    table.drop(columns="mouth_score").to_csv(tmp_path / "cols.csv")
    with pytest.raises(PipelineError, match="missing column.*mouth_score"):
        load_dataset(base / "images", tmp_path / "cols.csv", 16)
    with pytest.raises(PipelineError, match="expects 32x32"):
        load_dataset(base / "images", base / "all_scores_v2.csv", 32)
    dataset = load_dataset(base / "images", base / "all_scores_v2.csv", 16)
    # v8 needs a conditional checkpoint; the unconditioned base is the wrong layout
    with pytest.raises(PipelineError, match=r"layout does not match.*missing: mapping.label_weight"):
        FineTuner(tiny_config(base, version="v8", labels="zeros"), dataset)
    with pytest.raises(PipelineError, match="layout does not match"):
        FineTuner(tiny_config(base, fmaps_max=16), dataset)
    with pytest.raises(PipelineError, match="'layer12' names no part of the discriminator"):
        FineTuner(tiny_config(base, trainable_discriminator=["layer12"]), dataset)
    state = read_weights(base / "base.pth")
    save_weights(tmp_path / "odd.pth", {"weights": state["generator"]})
    with pytest.raises(PipelineError, match="not a GenForce StyleGAN checkpoint"):
        FineTuner(tiny_config(base, init_checkpoint=str(tmp_path / "odd.pth")), dataset)


def test_command_line_reports_a_missing_dataset_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "run_stylegan_fine_tuning.py", "--version", "v8", "--images-dir",
                             str(tmp_path / "missing"), "--run-dir", str(tmp_path / "run")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "dataset folder not found" in result.stderr


def test_celeba256_profile_builds_v1_strictly_from_a_genforce_layout_file(tmp_path):
    """Random weights in the official 256 px layout: every key loads, D's layer12-14 are the trainable tail."""
    from common.config import resolve_config

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "stylegan_model.pth", StyleGANGenerator(256), StyleGANDiscriminator(256))
    config = resolve_config(FineTuneConfig, "fine_tuning", profile="celeba256",
                            init_checkpoint=str(tmp_path / "stylegan_model.pth"))
    assert config.trainable_discriminator == last_discriminator_layers(256) == ["layer12", "layer13", "layer14"]
    from stylegan_modified.models import build_models

    generator, discriminator = build_models(config)
    assert tuple(generator.mapping.dense0.weight.shape) == (512, 528)
    assert tuple(discriminator.layer14.weight.shape) == (1, 519) and discriminator.layer12.group_size == 16


def _stage2_config(models_dir, **overrides):
    """A stage-2 config (cnn/config.py) of tiny 64 px ensembles of two folds in `models_dir`."""
    from cnn.config import CnnConfig

    values = dict(resolution=64, width_multiplier=0.25, num_folds=2, models_dir=str(models_dir), device="cpu",
                  channels_last=False)
    values.update(overrides)
    return CnnConfig(**values)


def _save_folds(models_dir, prop, width=0.25, folds=2):
    from cnn.models import build_property_cnn

    torch.manual_seed(0)
    for k in range(folds):
        save_weights(models_dir / f"{prop}_model_{k}.pt", build_property_cnn(prop, 64, width).state_dict())


def test_stage2_ensemble_monitor_loads_with_the_stage2_architecture_and_scores_in_unit_range(tmp_path):
    from stylegan_modified.monitor import stage2_ensemble

    config = _stage2_config(tmp_path)
    assert stage2_ensemble("gender", config) is None  # nothing trained: not monitored
    _save_folds(tmp_path, "gender")
    scores = stage2_ensemble("gender", config)(torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8))
    assert scores.shape == (3,) and ((scores > 0) & (scores < 1)).all()
    # built as the stage's config says: under another width the same files do not load
    with pytest.raises(PipelineError, match="gender_model_0.pt"):
        stage2_ensemble("gender", _stage2_config(tmp_path, width_multiplier=0.5))
    (tmp_path / "gender_model_1.pt").unlink()  # a fold missing beside the other
    with pytest.raises(PipelineError, match="gender_model_1.pt.*monitor_classifiers"):
        stage2_ensemble("gender", config)


def test_monitor_ensembles_are_read_with_the_config_of_the_run_that_trained_them():
    from cnn.config import CnnConfig
    from common.config import resolve_config
    from stylegan_modified.monitor import classifier_config

    stage2 = resolve_config(CnnConfig, "cnn", profile="embedded")
    stage7 = resolve_config(CnnConfig, "cnn", profile="embedded", stage="v8_dataset")
    v1 = classifier_config(FineTuneConfig(classifier_models_dir=stage2.models_dir))
    v8 = classifier_config(FineTuneConfig(version="v8", classifier_models_dir=stage7.models_dir))
    assert (v1.property_names, v1.width_multiplier, v1.skip_scarce_properties) == \
        (stage2.property_names, stage2.width_multiplier, stage2.skip_scarce_properties)
    assert (v8.property_names, v8.width_multiplier, v8.skip_scarce_properties) == \
        (stage7.property_names, stage7.width_multiplier, stage7.skip_scarce_properties)
    assert v1.path("models_dir") == stage2.path("models_dir") and v8.path("models_dir") == stage7.path("models_dir")


def test_a_monitor_classifier_that_cannot_be_loaded_is_a_one_line_error(base, tmp_path):
    config = tiny_config(base, "unmonitored", classifier_models_dir=str(tmp_path / "empty"),
                         monitor_classifiers=["gender"])
    with pytest.raises(PipelineError, match="gender_model_0.pt") as raised:
        run_fine_tuning(config, progress=False, log=lambda m: None, geometry=None)
    assert "\n" not in str(raised.value) and "monitor_classifiers" in str(raised.value)
    assert not (base / "unmonitored").exists()  # stopped before training


def test_a_property_its_stage_left_out_for_scarce_labels_is_not_monitored_as_before(tmp_path):
    """Stage 7 may leave out glass (skip_scarce_properties): it is then not monitored, said in the log; without that
    setting the same absence is an error, as is a property the stage does not have."""
    from common.freshness import write_record
    from stylegan_modified.monitor import ensemble_classifiers

    properties = {"gender": {}, "glass": {}}
    _save_folds(tmp_path, "gender")
    write_record(tmp_path / "model_info.json", {"num_folds": 2}, key="gender")  # the stage trained gender only
    messages = []
    scarce = _stage2_config(tmp_path, properties=properties, skip_scarce_properties=True)
    assert set(ensemble_classifiers(scarce, ["gender", "glass"], "cpu", messages.append)) == {"gender"}
    assert messages == [f"monitor: no glass ensemble in {tmp_path}; not monitored"]
    with pytest.raises(PipelineError, match="glass_model_0.pt"):
        ensemble_classifiers(_stage2_config(tmp_path, properties=properties), ["gender", "glass"], "cpu")
    with pytest.raises(PipelineError, match="no age property"):
        ensemble_classifiers(scarce, ["age"], "cpu")


def test_time_budget_stops_saves_and_exports(base):
    summary = run_fine_tuning(tiny_config(base, "budget", max_steps=50, max_minutes=1e-6), {}, progress=False,
                              log=lambda m: None)
    assert summary.step == 1 and summary.finished and all(p.is_file() for p in summary.exported)
    assert read_weights(base / "budget" / "training_state.pt")["step"] == 1


def test_label_correlations_are_pearson_r_of_request_vs_reading(base):
    from stylegan_modified.evaluation import label_correlations

    generator = FineTuner(tiny_config(base), load_dataset(base / "images", base / "all_scores_v2.csv", 16)).generator

    def brightness_everywhere(images):
        return np.repeat(brightness(images)[:, None], 7, axis=1)

    r = label_correlations(generator, brightness_everywhere, num=40, seed=1)
    assert set(r) == set(PROPERTY_COLUMNS) and all(-1 <= v <= 1 for v in r.values())
    assert len(set(r.values())) > 1  # each property against its own requested dim


def test_sample_scores_takes_single_and_multi_property_classifiers(base):
    """A classifier returning a dict (the annotator) gives one `name_key` score array per key, from the same images."""
    from stylegan_modified.evaluation import sample_scores

    generator = FineTuner(tiny_config(base), load_dataset(base / "images", base / "all_scores_v2.csv", 16)).generator

    def channel_means(images):
        return {c: images[:, k].float().mean(dim=(1, 2)).numpy() / 255 for k, c in enumerate("rgb")}

    scores = sample_scores(generator, {"bright": brightness, "colour": channel_means}, num=10, seed=2, batch_size=4)
    assert set(scores) == {"bright", "colour_r", "colour_g", "colour_b"}
    assert all(v.shape == (10,) for v in scores.values())
    np.testing.assert_allclose((scores["colour_r"] + scores["colour_g"] + scores["colour_b"]) / 3, scores["bright"],
                               atol=1e-6)


class ConstantGeometry:
    """Stands in for the landmark model of the variety monitor: every face measured the same but for the roll."""

    def measure(self, images):
        rows = np.tile([0.25, 0.1, 0.0, 0.0], (len(images), 1))
        rows[:, 2] = images.reshape(len(images), -1).mean(axis=1)  # brightness as "roll": varies with the face
        return rows


def test_w_spread_term_is_zero_at_the_start_and_positive_once_the_mapping_moves(base):
    dataset = load_dataset(base / "images", base / "all_scores_v2.csv", 16)
    for labels in ("zeros", "normal"):
        trainer = FineTuner(tiny_config(base, w_spread_labels=labels, w_spread_samples=16), dataset)
        assert float(trainer.w_spread(trainer.generator).detach()) == pytest.approx(0.0, abs=1e-7)
        assert (float(trainer.spread_labels.abs().sum()) == 0.0) == (labels == "zeros")
        with torch.no_grad():
            trainer.generator.mapping.dense1.weight.mul_(0.5)  # a narrower w
        assert float(trainer.w_spread(trainer.generator)) > 0.01
        assert float(trainer.w_spread(trainer.generator_smooth)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(PipelineError, match="w_spread_kind"):
        tiny_config(base, w_spread_kind="variance")


def test_w_spread_weight_holds_the_mapping_to_its_starting_spread(base):
    """Same seeds, lr raised so the mapping moves in 6 steps: with the term the trained mapping's spread stays
    nearer the start's than without it, and the step logs the term."""
    dataset = load_dataset(base / "images", base / "all_scores_v2.csv", 16)
    spreads = {}
    for weight in (0.0, 500.0):
        trainer = FineTuner(tiny_config(base, learning_rate=2e-2, mapping_lr_scale=10.0, w_spread_weight=weight,
                                        w_spread_samples=32), dataset)
        stats = [trainer.step() for _ in range(6)]
        assert ("w_spread" in stats[-1]) == (weight > 0)
        with torch.no_grad():
            spreads[weight] = float(trainer.w_spread(trainer.generator))
    assert spreads[0.0] > 1e-3
    assert spreads[500.0] < 0.2 * spreads[0.0]


def test_monitor_logs_variety_figures_and_plots_them(base):
    summary = run_fine_tuning(tiny_config(base, "variety", ema_half_life_images=8.0), {"bright": brightness}, progress=False,
                              log=lambda m: None, geometry=ConstantGeometry())
    log = pd.read_csv(base / "variety" / "train_log.csv")
    for key in ("eye_opening_sd", "mouth_opening_sd", "roll_sd", "yaw_sd", "sharpness", "pixel_diversity",
                "geometry_found"):
        assert log[f"variety_{key}"].notna().tolist() == [True, False, True, False, True], key
    assert (log["variety_eye_opening_sd"].dropna() == 0).all() and (log["variety_roll_sd"].dropna() > 0).all()
    assert (log["variety_pixel_diversity"].dropna() > 0).all()
    assert log["ema_w_spread"].iloc[0] == pytest.approx(0.0, abs=1e-7) and log["ema_w_spread"].iloc[-1] > 0
    assert summary.finished and (base / "variety" / "train_curves.png").is_file()
    # no classifiers and no variety: nothing monitored, no step-0 row
    run_fine_tuning(tiny_config(base, "quiet", monitor_variety=False), {}, progress=False, log=lambda m: None)
    assert pd.read_csv(base / "quiet" / "train_log.csv")["step"].tolist() == [1, 2, 3, 4]


def test_mapping_biases_get_their_own_learning_rate(base):
    dataset = load_dataset(base / "images", base / "all_scores_v2.csv", 16)
    trainer = FineTuner(tiny_config(base, mapping_lr_scale=10.0, mapping_bias_lr_scale=5.0), dataset)
    names = {id(p): n for n, p in trainer.generator.named_parameters()}
    groups = {tuple(sorted(names[id(p)] for p in g["params"])): g["lr"] for g in trainer.g_optimizer.param_groups}
    assert groups[("mapping.label_weight",)] == pytest.approx(1e-3)
    assert groups[("mapping.dense0.weight", "mapping.dense1.weight")] == pytest.approx(1e-2)
    assert groups[("mapping.dense0.bias", "mapping.dense1.bias")] == pytest.approx(5e-2)
    assert trainer.g_optimizer.param_groups[2]["weight_decay"] == 0.01  # the config's, for every group
