"""Training a property-score CNN with the project's one loop (common/training_loop.train_model).

Regression on z-scored property scores: a seeded 90/10 split, MSE (mean over outputs) for the gradient,
per-property validation loss, mean absolute difference and Pearson r every epoch, and early stopping on
the validation MSE averaged over the `criterion_names` properties only (section 5a leaves out
background_std, the noisiest score). Inputs are uint8 images, scaled to [-1, 1] per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from common.training_loop import LoopResult, LoopSettings, seeded_split, train_model
from property_score_cnn.models import channels_last, to_model_input


def pearson_r(predicted: np.ndarray, target: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    predicted, target = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
    pc, tc = predicted - predicted.mean(), target - target.mean()
    denominator = np.sqrt((pc * pc).sum() * (tc * tc).sum())
    return float((pc * tc).sum() / denominator) if denominator > 0 else float("nan")


def regression_metrics(names: tuple[str, ...]) -> Callable[[np.ndarray, np.ndarray], dict]:
    """Per-property `{p}_score_loss` (MSE), `{p}_score_abs_diff` (MAE) and `{p}_score_corr` (Pearson r),
    the original's log columns."""
    def metrics(predicted: np.ndarray, target: np.ndarray) -> dict:
        out = {}
        for k, name in enumerate(names):
            diff = predicted[:, k].astype(np.float64) - target[:, k]
            out[f"{name}_score_loss"] = float((diff * diff).mean())
            out[f"{name}_score_abs_diff"] = float(np.abs(diff).mean())
            out[f"{name}_score_corr"] = pearson_r(predicted[:, k], target[:, k])
        return out
    return metrics


def mse_over(columns: list[int]) -> Callable[[torch.Tensor, torch.Tensor, dict], float]:
    """Early-stopping criterion: validation MSE averaged over the chosen output columns."""
    def criterion(predicted: torch.Tensor, target: torch.Tensor, metrics: dict) -> float:
        return float(F.mse_loss(predicted[:, columns], target[:, columns]).item())
    return criterion


@dataclass
class TrainedCnn:
    result: LoopResult
    train_idx: np.ndarray
    val_idx: np.ndarray


def train_regression_cnn(model_factory: Callable[[], torch.nn.Module], images: torch.Tensor, targets: torch.Tensor,
                         names: tuple[str, ...], criterion_names: tuple[str, ...], settings: LoopSettings,
                         val_fraction: float = 0.1, split_seed: int | None = None,
                         make_scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
                         on_epoch: Callable[[dict], None] | None = None) -> TrainedCnn:
    """Train on a seeded split of `images` ([N, 3, R, R] uint8) against `targets` ([N, K] float32, columns
    in `names` order); the best epoch by the criterion is kept (in eval mode)."""
    if targets.ndim != 2 or targets.shape[1] != len(names) or len(targets) != len(images):
        raise ValueError(f"targets must be [{len(images)}, {len(names)}], got {tuple(targets.shape)}")
    split_seed = settings.seed if split_seed is None else split_seed
    train_idx, val_idx = seeded_split(len(images), val_fraction, split_seed)
    result = train_model(
        model_factory=lambda: channels_last(model_factory()), inputs=images, targets=targets.float(),
        train_idx=train_idx, val_idx=val_idx, loss_fn=F.mse_loss, settings=settings, prepare=to_model_input,
        metrics_fn=regression_metrics(names),
        criterion_fn=mse_over([names.index(n) for n in criterion_names]), make_scheduler=make_scheduler,
        on_epoch=on_epoch)
    return TrainedCnn(result, train_idx, val_idx)
