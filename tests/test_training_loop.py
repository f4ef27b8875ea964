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
