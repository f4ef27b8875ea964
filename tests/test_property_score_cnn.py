"""Stage 5: property-score CNN layouts, crops, training, scoring API, merge and the stage's errors."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from common.checkpoints import save_weights
from common.config import resolve_config
from common.errors import PipelineError
from common.fileio import load_image, save_image
from common.training_loop import LoopSettings
from property_score_cnn import (PROPERTY_NAMES, generator_output_to_uint8, load_property_cnn, score_generator_output,
                                score_images)
from property_score_cnn.models import (SEVEN_BRANCHES, BranchCNN, HairstyleScoreCNN, MergedPropertyScoreCNN,
                                       PropertyScoreCNN, crop_window, merge_models)
from property_score_cnn.config import MODEL_STAGES, PropertyCnnConfig
from property_score_cnn.stage import run_property_cnn_stage
from property_score_cnn.training import train_regression_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEVEN_COLUMNS = [f"{n}_score" for n in PROPERTY_NAMES[:7]]


# ---------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("resolution, branch, shape", [
    (256, "eyes", (128, 4, 14)), (256, "mouth", (128, 4, 6)), (256, "pose", (128, 6, 14)),
    (256, "hair_color", (128, 6, 6)), (256, "hair_length", (128, 4, 12)), (256, "background", (128, 4, 12)),
    (256, "bottom_left", (128, 10, 6)), (256, "bottom_right", (128, 10, 6)),
    (64, "eyes", (64, 6, 22)), (64, "mouth", (64, 8, 16)), (64, "pose", (128, 10, 14)),
    (64, "hair_color", (128, 6, 6)), (64, "hair_length", (128, 4, 12)), (64, "background", (128, 4, 12)),
    (64, "bottom_left", (128, 10, 6)),
])
def test_branch_feature_maps_keep_the_spec_size(resolution, branch, shape):
    assert BranchCNN(branch, resolution).feature_shape == shape


def test_256_px_layout_has_the_original_names_and_shapes():
    state = MergedPropertyScoreCNN(256).state_dict()
    expected = {
        "eyes_score_cnn.conv4.0.weight": (128, 64, 3, 3), "eyes_score_cnn.fc1.0.weight": (256, 128 * 4 * 14),
        "mouth_score_cnn.fc1.0.weight": (256, 128 * 4 * 6), "pose_score_cnn.conv5.0.weight": (128, 128, 3, 3),
        "pose_score_cnn.fc1.0.weight": (256, 128 * 6 * 14), "hair_color_score_cnn.conv6.0.weight": (128, 128, 3, 3),
        "hair_length_score_cnn.fc1.0.weight": (256, 128 * 4 * 12), "background_score_cnn.fc_final.weight": (2, 256),
        "hairstyle_score_cnn.bottom_left_cnn.conv4.0.weight": (96, 64, 3, 3),
        "hairstyle_score_cnn.bottom_right_cnn.conv6.0.weight": (128, 128, 3, 3),
        "hairstyle_score_cnn.fc1.0.weight": (512, 2 * 128 * 10 * 6), "hairstyle_score_cnn.fc_final.weight": (1, 512),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("eyes_score_cnn.conv5") for k in state)  # eyes has four convs


def test_output_order_and_the_public_names():
    from vectorfind.directions import SCORE_NAMES

    assert PROPERTY_NAMES == ("eyes", "hair_color", "hair_length", "mouth", "pose", "background_mean",
                              "background_std", "hairstyle")
    assert SCORE_NAMES == PROPERTY_NAMES
    model = MergedPropertyScoreCNN(64, 0.25).eval()
    # Each head outputs a constant that names its place; the model must return them in PROPERTY_NAMES order.
    heads = [getattr(model, f"{b}_score_cnn").fc_final for b, _ in SEVEN_BRANCHES] + \
        [model.hairstyle_score_cnn.fc_final]
    with torch.no_grad():
        value = iter(range(8))
        for head in heads:
            head.weight.zero_()
            for k in range(head.bias.numel()):
                head.bias[k] = float(next(value))
    out = score_images(model, torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert out.shape == (2, 8) and out.dtype == torch.float32
    assert out[0].tolist() == list(range(8))
    assert model.output_names == PROPERTY_NAMES
    assert PropertyScoreCNN(64, 0.25).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_crop_geometry_at_64_and_256():
    assert crop_window("eyes", 256) == (96, 144, 64, 192)
    assert crop_window("mouth", 256) == (160, 208, 96, 160)
    assert crop_window("pose", 256) == (112, 160, 88, 168)
    assert crop_window("hair_length", 256) == (128, 256, 0, 256)
    assert crop_window("background", 256) == (0, 128, 0, 256)
    assert crop_window("bottom_left", 256) == (128, 256, 0, 96)
    assert crop_window("bottom_right", 256) == (128, 256, 160, 256)
    for branch in ("hair_color", "hair_length", "background", "bottom_left", "bottom_right"):
        assert crop_window(branch, 64) == tuple(v // 4 for v in crop_window(branch, 256))
    for branch in ("eyes", "mouth", "pose"):  # placed on the embedded generator's faces
        assert crop_window(branch, 128) == tuple(v // 2 for v in crop_window(branch, 256))
    assert crop_window("mouth", 64) == (42, 62, 14, 50)
    # A branch only sees its crop: pixels outside change nothing, one pixel inside does.
    torch.manual_seed(0)
    mouth = BranchCNN("mouth", 64, 0.25, fc_width=8, outputs=1).eval()
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[:, :, :42] = -1.0
    y[:, :, :, 50:] = 1.0
    with torch.no_grad():
        assert torch.equal(mouth(x), mouth(y))
        y[:, :, 50, 30] += 0.7
        assert not torch.equal(mouth(x), mouth(y))


def test_eval_mode_disables_dropout():
    torch.manual_seed(0)
    model = HairstyleScoreCNN(64, 0.25)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))  # dropout is there ...
        model.eval()
        assert torch.equal(model(x), model(x))  # ... and off in eval mode
    images = (torch.rand(4, 64, 64, 3) * 255).to(torch.uint8)
    model.train()
    first, second = score_images(model, images), score_images(model, images)
    assert torch.equal(first, second) and model.training  # scoring runs in eval mode, then restores the mode


# ---------------------------------------------------------------------------------------------- training


def test_training_function_learns_a_crop_brightness():
    rng = np.random.default_rng(0)
    n = 320
    images = rng.integers(0, 256, (n, 3, 64, 64)).astype(np.uint8)
    level = rng.uniform(0, 255, n)
    images[:, :, 44:56, 24:40] = np.clip(level[:, None, None, None] + rng.normal(0, 25, (n, 3, 12, 16)), 0, 255)
    target = images[:, :, 44:56, 24:40].astype(np.float64).mean(axis=(1, 2, 3))
    target = (target - target.mean()) / target.std()
    trained = train_regression_cnn(
        lambda: BranchCNN("mouth", 64, 0.25, fc_width=64, fc_dropout=0.1, outputs=1),
        torch.from_numpy(images), torch.tensor(target, dtype=torch.float32)[:, None], ("mouth",), ("mouth",),
        LoopSettings(learning_rate=2e-3, train_batch_size=16, max_epochs=12, patience=4, seed=1))
    assert len(trained.val_idx) == 32 and not set(trained.val_idx) & set(trained.train_idx)
    row = trained.result.rows[trained.result.best_epoch]
    assert row["mouth_score_corr"] >= 0.95
    held_out = score_images(trained.result.model, torch.from_numpy(images[trained.val_idx]))[:, 0].numpy()
    assert np.corrcoef(held_out, target[trained.val_idx])[0, 1] >= 0.95


# ---------------------------------------------------------------------------------------------- scoring API


def test_score_images_equals_the_png_route_and_accepts_layouts(tmp_path):
    from stylegan.stylegan_generator import StyleGANGenerator

    torch.manual_seed(0)
    generator = StyleGANGenerator(resolution=64, fmaps_base=256, fmaps_max=32).eval()
    with torch.no_grad():
        images = generator.synthesis(generator.truncation(generator.mapping(torch.randn(5, generator.z_space_dim))))
        images = images * 3  # the generator's range is nominally [-1, 1]; make sure clipping is exercised too
    model = PropertyScoreCNN(64, 0.25).eval()
    pixels = generator_output_to_uint8(images)
    assert pixels.dtype == torch.uint8 and pixels.shape == (5, 64, 64, 3)
    for i, image in enumerate(pixels.numpy()):
        save_image(image, tmp_path / f"{i:06d}.png")
    from_png = np.stack([load_image(tmp_path / f"{i:06d}.png") for i in range(5)])
    direct = score_generator_output(model, images)
    assert torch.equal(direct, score_images(model, from_png))
    assert torch.equal(direct, score_images(model, torch.from_numpy(from_png).permute(0, 3, 1, 2)))
    with pytest.raises(TypeError):
        score_images(model, torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError):
        score_images(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_merge_keeps_both_models_outputs_bit_identical(tmp_path):
    torch.manual_seed(1)
    seven, hairstyle = PropertyScoreCNN(64, 0.25).eval(), HairstyleScoreCNN(64, 0.5).eval()
    merged = merge_models(seven, hairstyle)
    images = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8)
    expected = torch.cat([score_images(seven, images), score_images(hairstyle, images)], dim=1)
    assert torch.equal(score_images(merged, images), expected)
    save_weights(tmp_path / "merged.pth", merged.state_dict())
    reloaded = load_property_cnn(tmp_path / "merged.pth")  # kind, widths and resolution read from the file
    assert isinstance(reloaded, MergedPropertyScoreCNN) and not reloaded.training
    assert reloaded.resolution == 64 and reloaded.hairstyle_score_cnn.width_multiplier == 0.5
    assert torch.equal(score_images(reloaded, images), expected)
    with pytest.raises(PipelineError):
        merge_models(PropertyScoreCNN(128, 0.25), hairstyle)


def test_256_px_weights_load_strictly_and_wrong_layouts_fail_in_one_line(tmp_path):
    torch.manual_seed(2)
    original = PropertyScoreCNN(256)
    with torch.no_grad():
        for p in original.parameters():
            p.normal_()
    save_weights(tmp_path / "seven_256.pth", original.state_dict())
    loaded = load_property_cnn(tmp_path / "seven_256.pth")
    assert isinstance(loaded, PropertyScoreCNN) and loaded.resolution == 256
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), original.state_dict().values()))

    with pytest.raises(PipelineError) as wrong_resolution:
        load_property_cnn(tmp_path / "seven_256.pth", resolution=64)
    message = str(wrong_resolution.value)
    assert "seven_256.pth" in message and "shape" in message and "\n" not in message

    state = PropertyScoreCNN(64, 0.5).state_dict()
    del state["pose_score_cnn.conv3.0.weight"]
    save_weights(tmp_path / "broken.pth", state)
    with pytest.raises(PipelineError) as broken:
        load_property_cnn(tmp_path / "broken.pth")
    assert "missing: pose_score_cnn.conv3.0.weight" in str(broken.value) and "\n" not in str(broken.value)
    save_weights(tmp_path / "not_a_dict.pth", [torch.zeros(1)])
    with pytest.raises(PipelineError, match="not a state dict"):
        load_property_cnn(tmp_path / "not_a_dict.pth")
    with pytest.raises(PipelineError, match="not found"):
        load_property_cnn(tmp_path / "absent.pth")


# ---------------------------------------------------------------------------------------------- the stage


def write_dataset(folder, num_images=40, seed=0):
    """Generator-like 64 px PNGs and an all_scores_v2.csv whose img_path points elsewhere (224 crops)."""
    rng = np.random.default_rng(seed)
    images_dir = folder / "filtered"
    img_nos = np.sort(rng.choice(1000, num_images, replace=False))
    rows = []
    for img_no in img_nos:
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        save_image(image, images_dir / f"{img_no:06d}.png")
        rows.append({"img_no": int(img_no), "img_path": f"segmentation/segmentation_results/face_{img_no:06d}.png",
                     **{c: float(rng.normal()) for c in SEVEN_COLUMNS}, "hairstyle_score": float(rng.normal())})
    table = pd.DataFrame(rows)
    scores_csv = folder / "all_scores_v2.csv"
    table.drop(columns="hairstyle_score").to_csv(scores_csv)  # with the unnamed index column, as stage 4
    hair_csv = folder / "all_scores_ohlora_v3.csv"
    table[["img_no", "img_path", "hairstyle_score"]].to_csv(hair_csv)
    return images_dir, scores_csv, hair_csv


def stage_config(folder, images_dir, scores_csv, hair_csv, stage=None, **overrides):
    """The seven run's config (stage None) or the hairstyle run's (stage "hairstyle": no v8 scores, so the fallback)."""
    inputs = (dict(scores_csv=str(folder / "absent_v8.csv"), images_dir=str(folder / "absent"),
                   fallback_scores_csv=str(hair_csv), fallback_images_dir=str(images_dir)) if stage == "hairstyle"
              else dict(scores_csv=str(scores_csv), images_dir=str(images_dir)))
    values = dict(resolution=64, **inputs,
                  models_dir=str(folder / "models"), log_dir=str(folder / "logs"),
                  predictions_csv=str(folder / "all_scores_v2_cnn.csv"),
                  compare_csv=str(folder / "compare" / "all_scores_v2_vs_cnn.csv"),
                  width_multiplier=0.125, learning_rate=1e-3, max_epochs=2, patience=2,
                  train_batch_size=16, num_threads=1)
    values.update(overrides)
    return resolve_config(PropertyCnnConfig, "property_cnn", profile="embedded", stage=stage, **values)


def test_stage_trains_writes_outputs_reuses_and_merges(tmp_path):
    images_dir, scores_csv, hair_csv = write_dataset(tmp_path)
    config = stage_config(tmp_path, images_dir, scores_csv, hair_csv)
    seven = run_property_cnn_stage(config, "seven", log=lambda m: None)
    assert seven.trained and set(seven.val_r) == set(PROPERTY_NAMES[:7])
    log = pd.read_csv(tmp_path / "logs" / "train_log_v2_cnn.csv")
    assert len(log) == 2 and {"eyes_score_loss", "eyes_score_abs_diff", "eyes_score_corr", "valid_loss"} <= set(log)
    predictions = pd.read_csv(tmp_path / "all_scores_v2_cnn.csv")
    assert list(predictions.columns) == ["img_no", "img_path", *SEVEN_COLUMNS] and len(predictions) == 40
    assert predictions["img_path"].str.endswith(".png").all() and predictions["img_path"].str.contains("filtered").all()
    compare = pd.read_csv(tmp_path / "compare" / "all_scores_v2_vs_cnn.csv")
    assert {"eyes_score_v2", "eyes_score_v2_cnn", "eyes_score_diff"} <= set(compare)
    assert (compare["split"] == "valid").sum() == 4
    assert (tmp_path / "logs" / "val_scatter_v2_cnn.png").stat().st_size > 1000
    model = load_property_cnn(tmp_path / "models" / "stylegan_gen_fine_tuned_v2_cnn.pth")
    pixels = torch.from_numpy(np.stack([load_image(p) for p in sorted(images_dir.iterdir())]))
    assert np.allclose(score_images(model, pixels).numpy(), predictions[SEVEN_COLUMNS].to_numpy(), atol=6e-5)

    again = run_property_cnn_stage(config, "seven", log=lambda m: None)
    assert not again.trained and again.val_r == seven.val_r  # reused, same numbers

    hair_config = stage_config(tmp_path, images_dir, scores_csv, hair_csv, stage="hairstyle")
    hairstyle = run_property_cnn_stage(hair_config, "hairstyle", log=lambda m: None)
    assert hairstyle.trained and list(hairstyle.val_r) == ["hairstyle"]
    assert len(pd.read_csv(tmp_path / "logs" / "property_score_cnn_train_log.csv")) == 2
    merged = run_property_cnn_stage(config, "merged", log=lambda m: None)
    merged_model = load_property_cnn(merged.model_path)
    assert merged_model.output_names == PROPERTY_NAMES
    hair_model = load_property_cnn(tmp_path / "models" / "ohlora_v3_hairstyle_property_cnn.pth")
    assert torch.equal(score_images(merged_model, pixels),
                       torch.cat([score_images(model, pixels), score_images(hair_model, pixels)], 1))

    # Other scores than the model was trained on: refused until --retrain.
    table = pd.read_csv(scores_csv, index_col=0)
    table.loc[0, "eyes_score"] += 1.0
    table.to_csv(scores_csv)
    with pytest.raises(PipelineError, match="retrain"):
        run_property_cnn_stage(config, "seven", log=lambda m: None)
    assert run_property_cnn_stage(config, "seven", retrain=True, log=lambda m: None).trained


def test_stage_errors_are_one_line(tmp_path):
    images_dir, scores_csv, hair_csv = write_dataset(tmp_path, num_images=12)

    def error(scores, images=images_dir):
        with pytest.raises(PipelineError) as raised:
            run_property_cnn_stage(stage_config(tmp_path, images, scores, hair_csv), "seven", log=lambda m: None)
        assert "\n" not in str(raised.value)
        return str(raised.value)

    assert "not found" in error(tmp_path / "absent.csv") and "compute_property_scores.py" in error(tmp_path / "x.csv")
    table = pd.read_csv(scores_csv, index_col=0)
    table.drop(columns="mouth_score").to_csv(tmp_path / "no_mouth.csv")
    assert "missing column(s) mouth_score" in error(tmp_path / "no_mouth.csv")
    bad = table.copy()
    bad["pose_score"] = bad["pose_score"].astype(object)
    bad.loc[3, "pose_score"] = "abc"
    bad.to_csv(tmp_path / "bad_value.csv")
    assert "row 5 has pose_score = 'abc'" in error(tmp_path / "bad_value.csv")
    (tmp_path / "garbage.csv").write_bytes(b"\x00\xff\xfe garbage")
    assert "garbage.csv" in error(tmp_path / "garbage.csv")
    extra = pd.concat([table, table.iloc[:1].assign(img_no=99999)], ignore_index=True)
    extra.to_csv(tmp_path / "extra.csv")
    assert "1 image(s) listed in" in error(tmp_path / "extra.csv") and "099999.png" in error(tmp_path / "extra.csv")
    assert "image folder not found" in error(scores_csv, tmp_path / "nowhere")

    # A model file of another layout (128 px) where the 64 px model is expected: one line naming the file.
    config = stage_config(tmp_path, images_dir, scores_csv, hair_csv)
    save_weights(config.model_path("seven"), PropertyScoreCNN(128, 0.125).state_dict())
    with pytest.raises(PipelineError) as raised:
        run_property_cnn_stage(config, "seven", log=lambda m: None)
    assert "stylegan_gen_fine_tuned_v2_cnn.pth" in str(raised.value) and "retrain" in str(raised.value)
    assert "\n" not in str(raised.value)
    save_weights(config.model_path("hairstyle"), HairstyleScoreCNN(64, 0.125).state_dict())
    save_weights(config.model_path("seven"), HairstyleScoreCNN(64, 0.125).state_dict())
    with pytest.raises(PipelineError, match="must hold the 7-output CNN"):
        run_property_cnn_stage(config, "merged", log=lambda m: None)


def test_hairstyle_cnn_is_the_named_run_hairstyle_with_a_fallback_to_the_stage1_scores(tmp_path, repo_root):
    """--model hairstyle: [hairstyle.property_cnn] over [property_cnn], its inputs from common/artifacts.py: the v8
    dataset's hairstyle scores, else the stage-1 set's; the seven CNN has no fallback."""
    from common import artifacts

    for profile in ("embedded", "celeba256"):
        seven = resolve_config(PropertyCnnConfig, "property_cnn", profile=profile)
        hair = resolve_config(PropertyCnnConfig, "property_cnn", profile=profile, stage=MODEL_STAGES["hairstyle"])
        assert (seven.lr_schedule, hair.lr_schedule) == ("cosine", "exponential")
        assert (hair.scores_csv, hair.images_dir, hair.fallback_scores_csv, hair.fallback_images_dir) == (
            artifacts.V8_FACES.scores_csv("hairstyle"), artifacts.V8_FACES.filtered,
            artifacts.FACES.scores_csv("hairstyle"), artifacts.FACES.filtered)
        assert (seven.scores_csv, seven.fallback_scores_csv) == (artifacts.FACES.scores_csv("v2"), "")
        assert (hair.train_batch_size, hair.eval_batch_size, hair.seed) == (
            seven.train_batch_size, seven.eval_batch_size, seven.seed)
    images_dir, scores_csv, hair_csv = write_dataset(tmp_path, num_images=4)
    hair = stage_config(tmp_path, images_dir, scores_csv, hair_csv, stage="hairstyle")
    assert hair.source() == (hair_csv, images_dir)  # no v8 scores
    hair.scores_csv = str(scores_csv)
    assert hair.source() == (scores_csv, tmp_path / "absent")  # the v8 scores exist
    seven = stage_config(tmp_path, images_dir, tmp_path / "none.csv", hair_csv)
    assert seven.source() == (tmp_path / "none.csv", images_dir)
    result = subprocess.run([sys.executable, str(repo_root / "run_property_score_cnn.py"), "--model", "hairstyle",
                             "--dry-run", "--patience", "3"], capture_output=True, text=True, cwd=repo_root,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "width x0.5, <= 8 epochs, patience 3" in result.stdout and "'stage': 'hairstyle'" in result.stdout


def test_run_script_prints_one_line_error(tmp_path, repo_root):
    result = subprocess.run([sys.executable, str(repo_root / "run_property_score_cnn.py"), "--model", "seven",
                             "--scores-csv", str(tmp_path / "absent.csv")], capture_output=True, text=True,
                            cwd=repo_root, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "absent.csv: scores file not found" in result.stderr
