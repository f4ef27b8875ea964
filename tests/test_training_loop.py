import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import PipelineError
from common.training_loop import (LoopSettings, predict, seeded_folds, seeded_split, train_model,
                                  train_with_restarts)


def _brightness_data(n=240, seed=0):
    """Images whose target is the mean brightness of their top-left 4x4 crop (plus noise elsewhere)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)
    targets = images[:, 0, :4, :4].astype(np.float32).mean(axis=(1, 2)) / 255.0
    return torch.from_numpy(images), torch.from_numpy(targets)


class TinyRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Dropout(0.3), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


def test_seeded_split_is_reproducible_and_disjoint():
    a_train, a_val = seeded_split(100, 0.1, seed=3)
    b_train, b_val = seeded_split(100, 0.1, seed=3)
    c_train, c_val = seeded_split(100, 0.1, seed=4)
    assert np.array_equal(a_val, b_val) and not np.array_equal(a_val, c_val)
    assert len(a_val) == 10 and len(np.intersect1d(a_train, a_val)) == 0
    assert len(np.union1d(a_train, a_val)) == 100


def test_seeded_folds_cover_every_item_once():
    folds = seeded_folds(23, 5, seed=1)
    all_val = np.concatenate([va for _, va in folds])
    assert sorted(all_val.tolist()) == list(range(23))
    for tr, va in folds:
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 23
    with pytest.raises(PipelineError):
        seeded_folds(3, 5, seed=0)


def test_loop_learns_crop_brightness_and_keeps_best_epoch():
    images, targets = _brightness_data()
    train_idx, val_idx = seeded_split(len(images), 0.2, seed=0)
    settings = LoopSettings(learning_rate=3e-3, train_batch_size=16, max_epochs=60, patience=10, seed=0)

    def pearson(pred, tgt):
        return {"val_r": float(np.corrcoef(pred, tgt)[0, 1])}

    result = train_model(TinyRegressor, images, targets, train_idx, val_idx, F.mse_loss, settings,
                         prepare=lambda x: x.float() / 255.0, metrics_fn=pearson)
    assert not result.model.training
    pred = predict(result.model, images[val_idx], 32, lambda x: x.float() / 255.0).numpy()
    assert np.corrcoef(pred, targets[val_idx].numpy())[0, 1] >= 0.95
    criteria = [row["criterion"] for row in result.rows]
    assert result.best_epoch == int(np.argmin(criteria))
    assert result.best_criterion == pytest.approx(min(criteria))
    assert {"epoch", "train_loss", "val_loss", "val_r"} <= set(result.rows[0])


def test_same_seed_same_model_and_criterion_controls_stopping():
    images, targets = _brightness_data(n=80)
    train_idx, val_idx = seeded_split(len(images), 0.25, seed=0)
    settings = LoopSettings(learning_rate=1e-3, max_epochs=4, patience=2, seed=7)
    a = train_model(TinyRegressor, images, targets, train_idx, val_idx, F.mse_loss, settings, prepare=lambda x: x.float() / 255)
    b = train_model(TinyRegressor, images, targets, train_idx, val_idx, F.mse_loss, settings, prepare=lambda x: x.float() / 255)
    for key in a.best_state:
        assert torch.equal(a.best_state[key], b.best_state[key])
    # A criterion that only gets worse: epoch 0 is best and the loop stops after `patience` epochs.
    c = train_model(TinyRegressor, images, targets, train_idx, val_idx, F.mse_loss,
                    LoopSettings(max_epochs=50, patience=3, seed=0), prepare=lambda x: x.float() / 255,
                    criterion_fn=lambda p, t, m, counter=iter(range(100)): float(next(counter)))
    assert c.best_epoch == 0 and c.total_epochs == 4


def test_restart_rule_retries_until_accepted_then_keeps_best():
    criteria = iter([0.9, 0.5, 0.2, 0.1])

    class Fake:
        def __init__(self, value):
            self.best_criterion = value

    kept, attempts, ok = train_with_restarts(lambda attempt: Fake(next(criteria)), lambda r: r.best_criterion < 0.3, 5)
    assert ok and kept.best_criterion == 0.2 and len(attempts) == 3
    criteria = iter([0.9, 0.5, 0.7])
    kept, attempts, ok = train_with_restarts(lambda attempt: Fake(next(criteria)), lambda r: False, 2)
    assert not ok and kept.best_criterion == 0.5 and len(attempts) == 3


def test_seeded_folds_can_stratify():
    labels = np.array([0] * 40 + [1] * 10)
    folds = seeded_folds(50, 5, seed=2, stratify=labels)
    assert [int(labels[va].sum()) for _, va in folds] == [2] * 5  # the minority spread evenly
    again = seeded_folds(50, 5, seed=2, stratify=labels)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    with pytest.raises(PipelineError, match="StratifiedKFold"):
        seeded_folds(23, 5, seed=0, stratify=np.array([0] * 20 + [1] * 3))


def test_sum_reduction_reports_per_sample_losses():
    images, targets = _brightness_data(n=64)
    train_idx, val_idx = seeded_split(len(images), 0.25, seed=0)
    # lr 0: the same untrained model; its reported losses must not depend on how loss_fn reduces
    rows = [train_model(TinyRegressor, images, targets, train_idx, val_idx, loss, LoopSettings(
        learning_rate=0.0, max_epochs=1, seed=1, loss_reduction=reduction), prepare=lambda x: x.float() / 255).rows[0]
        for loss, reduction in ((F.mse_loss, "mean"), (lambda p, t: F.mse_loss(p, t, reduction="sum"), "sum"))]
    assert rows[0]["val_loss"] == pytest.approx(rows[1]["val_loss"], rel=1e-6)
    assert rows[0]["train_loss"] == pytest.approx(rows[1]["train_loss"], rel=1e-5)
    with pytest.raises(PipelineError, match="loss_reduction"):
        LoopSettings(loss_reduction="max")


def test_per_batch_schedule_small_batches_and_no_validation():
    images, targets = _brightness_data(n=21)
    lrs = []

    class Recorder(torch.optim.lr_scheduler.LambdaLR):
        def step(self, *args, **kwargs):
            super().step(*args, **kwargs)
            lrs.append(self.get_last_lr()[0])

    settings = LoopSettings(max_epochs=3, train_batch_size=10, scheduler_step="batch", min_batch_size=2, seed=0)
    result = train_model(TinyRegressor, images, targets, np.arange(21), np.zeros(0, np.int64), F.mse_loss, settings,
                         prepare=lambda x: x.float() / 255,
                         make_scheduler=lambda opt: Recorder(opt, lambda step: 1.0 / (1 + step)))
    assert len(lrs) == 1 + 3 * 2  # construction, then two full batches per epoch; the batch of one is skipped
    assert result.total_epochs == 3 and result.best_epoch == 2  # no validation: every epoch, the last kept
    assert "val_loss" not in result.rows[0]
    with pytest.raises(PipelineError, match="scheduler_step"):
        LoopSettings(scheduler_step="sometimes")
