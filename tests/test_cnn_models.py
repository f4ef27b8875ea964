"""Stage-2 CNN shapes, fold splits, restart rule, metrics and ensembling (no images on disk)."""

import numpy as np
import pytest
import torch

from cnn.models import build_property_cnn, conv_plan, crop_window
from cnn.training import (AttemptResult, TrainSettings, binary_metrics, fold_splits, predict_scores,
                          train_attempt, train_fold_with_restarts)
from cnn.inference import ensemble_average
from cnn.keep import keep_mask
from common.errors import PipelineError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("resolution, prop, feature_shape, fc_in", [
    (256, "gender", (256, 6, 6), 9216),     # the original's shapes
    (256, "quality", (256, 4, 12), 12288),
    (64, "gender", (128, 6, 6), 4608),
    (64, "quality", (256, 4, 12), 12288),
])
def test_cnn_shapes_follow_the_spec_and_scale_down(resolution, prop, feature_shape, fc_in):
    model = build_property_cnn(prop, resolution)
    assert model.feature_shape == feature_shape
    assert model.fc1[0].in_features == fc_in
    x = torch.rand(2, 3, resolution, resolution)
    assert model.eval()(x).shape == (2,)


def test_crops_scale_with_resolution_and_no_upsampling():
    assert crop_window("quality", 256) == (0, 64, 64, 192)
    assert crop_window("quality", 64) == (0, 16, 16, 48)
    assert crop_window("gender", 64) == (0, 64, 0, 64)
    model = build_property_cnn("gender", 64)
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 256, 256))
    with pytest.raises(PipelineError):
        build_property_cnn("gender", 100)
    # 256 px keeps all five pools of the original gender stack; 64 px drops two.
    assert sum(kind == "pool" for kind, _ in conv_plan("gender", 256)) == 5
    assert sum(kind == "pool" for kind, _ in conv_plan("gender", 64)) == 3


def test_quality_cnn_only_sees_the_top_centre_strip():
    torch.manual_seed(0)
    model = build_property_cnn("quality", 64, width_multiplier=0.25).eval()
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[:, :, 16:, :] = 0.0  # below the strip
    y[:, :, :, :16] = 1.0  # left of it
    with torch.inference_mode():
        assert torch.allclose(model(x), model(y))
        z = x.clone()
        z[:, :, 5, 30] += 0.5
        assert not torch.allclose(model(x), model(z))


def test_width_multiplier_scales_channels():
    half = build_property_cnn("gender", 64, width_multiplier=0.5)
    assert half.feature_shape == (64, 6, 6)


def test_inference_is_deterministic_in_eval_mode():
    torch.manual_seed(0)
    model = build_property_cnn("gender", 64, width_multiplier=0.25)
    model.train()  # predict_scores must switch dropout off by itself
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    a = predict_scores(model, images, batch_size=2)
    b = predict_scores(model, images, batch_size=5)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert model.training  # mode restored


def test_fold_splits_are_seeded_and_stratified():
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.1).astype(int)
    a = fold_splits("quality", labels, 5, seed=3)
    b = fold_splits("quality", labels, 5, seed=3)
    c = fold_splits("quality", labels, 5, seed=4)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    positives = [int(labels[val].sum()) for _, val in a]
    assert max(positives) - min(positives) <= 1  # stratified: minority spread evenly
    all_val = np.sort(np.concatenate([val for _, val in a]))
    np.testing.assert_array_equal(all_val, np.arange(200))
    gender = fold_splits("gender", labels, 5, seed=3)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(gender, fold_splits("gender", labels, 5, seed=3)))
    with pytest.raises(PipelineError, match="StratifiedKFold"):
        fold_splits("quality", np.array([0] * 3 + [1] * 20), 5, seed=0)


def _fake_attempt(attempt: int, loss: float) -> AttemptResult:
    return AttemptResult(attempt=attempt, seed=attempt, min_val_loss=loss, best_epoch=0, total_epochs=1,
                         elapsed_time=0.0, val_loss_list=[loss], epoch_rows=[{"val_auroc": 0.5}], best_state={})


def test_restart_rule_retrains_until_below_threshold():
    losses = iter([0.5, 0.4, 0.3, 0.2])
    calls = []

    def run(attempt):
        calls.append(attempt)
        return _fake_attempt(attempt, next(losses))

    attempts, kept, success, cap_hit = train_fold_with_restarts(run, restart_loss=0.35, max_restarts=5)
    assert calls == [0, 1, 2]
    assert success and not cap_hit and kept.attempt == 2


def test_restart_rule_stops_at_the_cap_and_keeps_the_best_attempt():
    losses = iter([0.6, 0.45, 0.5, 0.1])
    attempts, kept, success, cap_hit = train_fold_with_restarts(
        lambda a: _fake_attempt(a, next(losses)), restart_loss=0.35, max_restarts=2)
    assert len(attempts) == 3  # first try + 2 restarts, never the 4th
    assert cap_hit and not success
    assert kept.attempt == 1 and kept.min_val_loss == 0.45


def test_train_attempt_keeps_the_best_epoch_and_stops_early():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 64, 64), dtype=torch.uint8)
    labels = np.array([0, 1] * 10)
    settings = TrainSettings(resolution=64, width_multiplier=0.125, learning_rate=1e-3, train_batch_size=8,
                             max_epochs=6, patience=1, metric_threshold=0.5)
    result = train_attempt("gender", settings, images, labels, np.arange(15), np.arange(15, 20), seed=1)
    assert result.total_epochs <= 6
    assert result.min_val_loss == min(result.val_loss_list)
    assert result.val_loss_list[result.best_epoch] == result.min_val_loss
    # early stopping: at most `patience` epochs after the best one
    assert result.total_epochs - 1 - result.best_epoch <= settings.patience
    again = train_attempt("gender", settings, images, labels, np.arange(15), np.arange(15, 20), seed=1)
    assert again.val_loss_list == pytest.approx(result.val_loss_list)  # seeded


def test_binary_metrics():
    m = binary_metrics(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]), threshold=0.5)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (1, 1, 1, 1)
    assert m["val_auroc"] == pytest.approx(0.75)
    assert np.isnan(binary_metrics(np.array([0.2, 0.4]), np.array([1, 1]), 0.5)["val_auroc"])


def test_ensemble_average_is_the_rounded_mean():
    scores = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.50004, 0.5]])
    np.testing.assert_allclose(ensemble_average(scores), [0.3, 0.7])
    assert ensemble_average(np.array([[0.12344], [0.12348]])).item() == 0.1235


def test_keep_mask_thresholds_are_inclusive():
    import pandas as pd

    from cnn.properties import parse_property_rules

    def rules(min_gender, min_quality):
        return parse_property_rules({"gender": {"keep_min": min_gender}, "quality": {"keep_min": min_quality}})

    scores = pd.DataFrame({"gender_score": [0.7, 0.69, 1.0, 0.95], "quality_score": [0.9, 1.0, 0.89, 0.95]})
    assert keep_mask(scores, rules(0.7, 0.9)).tolist() == [True, False, False, True]
    assert keep_mask(scores, rules(0.5, 0.5)).tolist() == [True, True, True, True]
