"""K-fold training of one property CNN (gender or quality), with the original's restart rule.

Per fold: AdamW, BCE with sum reduction for the gradient (losses are reported as means),
cosine learning rate stepped once per epoch, early stopping on the validation loss, and the
best epoch's weights kept. If a fold's minimum validation loss stays above the property's
threshold the fold is retrained from a fresh initialisation, as the original does, but at most
`max_restarts` times; then the best attempt is kept and a log line says the cap was hit.
Every random choice (fold split, initialisation, batch order) comes from the run seed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from cnn.models import PROPERTIES, build_property_cnn
from common.errors import PipelineError

EPOCH_DETAIL_COLUMNS = ("epoch", "val_loss", "val_accuracy", "tp", "tn", "fp", "fn", "val_recall",
                        "val_precision", "val_f1_score", "val_auroc")


@dataclass(frozen=True)
class TrainSettings:
    resolution: int
    width_multiplier: float = 1.0
    learning_rate: float = 5e-5
    train_batch_size: int = 16
    eval_batch_size: int = 64
    max_epochs: int = 1000
    patience: int = 20
    cosine_t_max: int = 10
    max_restarts: int = 5
    restart_loss: float = 0.35
    metric_threshold: float = 0.5
    num_folds: int = 5
    seed: int = 0
    augment_flip: bool = False


@dataclass
class AttemptResult:
    """One training run of one fold: the per-epoch log and the best epoch's weights."""

    attempt: int
    seed: int
    min_val_loss: float
    best_epoch: int
    total_epochs: int
    elapsed_time: float
    val_loss_list: list[float]
    epoch_rows: list[dict]
    best_state: dict[str, torch.Tensor] = field(repr=False)

    @property
    def best_auroc(self) -> float:
        return float(self.epoch_rows[self.best_epoch]["val_auroc"])


@dataclass
class FoldResult:
    fold_no: int
    attempts: list[AttemptResult]
    kept: AttemptResult
    success: bool
    cap_hit: bool


def fold_splits(prop: str, labels: np.ndarray, num_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index arrays: KFold for gender, StratifiedKFold for quality, both
    shuffled with `seed` (the original used unseeded splits)."""
    labels = np.asarray(labels)
    if len(labels) < num_folds:
        raise PipelineError(f"{prop}: {len(labels)} labelled images cannot be split into {num_folds} folds")
    if prop == "quality":
        counts = np.bincount(labels.astype(int), minlength=2)
        if counts.min() < num_folds:
            raise PipelineError(f"quality labels have only {counts.min()} image(s) of class "
                                f"{int(counts.argmin())}; StratifiedKFold needs at least {num_folds}: label more images")
        splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        return [(tr, va) for tr, va in splitter.split(np.zeros(len(labels)), labels)]
    if prop == "gender":
        splitter = KFold(n_splits=num_folds, shuffle=True, random_state=seed)
        return [(tr, va) for tr, va in splitter.split(labels)]
    raise ValueError(f"unknown property '{prop}'; expected one of {PROPERTIES}")


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, confusion counts, recall, precision, F1 at `threshold`, and AUROC (NaN if one class)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    predicted = (scores >= threshold).astype(int)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    recall = tp / (tp + fn) if tp + fn else float("nan")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    auroc = float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")
    return dict(val_accuracy=(tp + tn) / max(len(labels), 1), tp=tp, tn=tn, fp=fp, fn=fn,
                val_recall=recall, val_precision=precision, val_f1_score=f1, val_auroc=auroc)


def to_float_images(images_uint8: torch.Tensor) -> torch.Tensor:
    """[N, 3, R, R] uint8 -> float in [0, 1], as the original feeds its CNNs."""
    return images_uint8.float().div_(255.0)


@torch.inference_mode()
def predict_scores(model: torch.nn.Module, images_uint8: torch.Tensor, batch_size: int) -> np.ndarray:
    """Sigmoid scores of `model` in eval mode (dropout off), batched."""
    was_training = model.training
    model.eval()
    out = [model(to_float_images(images_uint8[i:i + batch_size])) for i in range(0, len(images_uint8), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def attempt_seed(base_seed: int, prop: str, fold_no: int, attempt: int) -> int:
    return base_seed * 1_000_003 + PROPERTIES.index(prop) * 100_000 + fold_no * 1_000 + attempt


def train_attempt(prop: str, settings: TrainSettings, images: torch.Tensor, labels: np.ndarray,
                  train_idx: np.ndarray, val_idx: np.ndarray, seed: int, attempt: int = 0,
                  on_epoch: Callable[[dict], None] | None = None) -> AttemptResult:
    """Train a freshly initialised model on `train_idx` until early stopping; keep the best epoch."""
    torch.manual_seed(seed)
    model = build_property_cnn(prop, settings.resolution, settings.width_multiplier)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.cosine_t_max, eta_min=0.0)
    order_rng = torch.Generator().manual_seed(seed)
    targets = torch.tensor(np.asarray(labels), dtype=torch.float32)
    train_idx_t = torch.as_tensor(train_idx, dtype=torch.long)
    val_images, val_labels = images[torch.as_tensor(val_idx, dtype=torch.long)], np.asarray(labels)[val_idx]
    val_targets = torch.tensor(val_labels, dtype=torch.float32)

    best_loss, best_epoch, best_state = math.inf, -1, None
    losses: list[float] = []
    rows: list[dict] = []
    start = time.perf_counter()
    for epoch in range(settings.max_epochs):
        model.train()
        for batch in train_idx_t[torch.randperm(len(train_idx_t), generator=order_rng)].split(settings.train_batch_size):
            inputs = to_float_images(images[batch])
            if settings.augment_flip:
                # Mirror half the batch: both properties are left-right symmetric and the
                # quality strip is centred, so a flip is a free extra sample on small label sets.
                flipped = torch.rand(len(batch), generator=order_rng) < 0.5
                inputs[flipped] = inputs[flipped].flip(-1)
            scores = model(inputs)
            loss = F.binary_cross_entropy(scores, targets[batch], reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()

        val_scores = predict_scores(model, val_images, settings.eval_batch_size)
        val_loss = float(F.binary_cross_entropy(torch.from_numpy(val_scores), val_targets).item())
        losses.append(val_loss)
        row = dict(epoch=epoch, val_loss=val_loss, **binary_metrics(val_scores, val_labels, settings.metric_threshold))
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= settings.patience:
            break
    assert best_state is not None, "max_epochs must be >= 1"
    return AttemptResult(attempt=attempt, seed=seed, min_val_loss=best_loss, best_epoch=best_epoch,
                         total_epochs=len(losses), elapsed_time=time.perf_counter() - start,
                         val_loss_list=losses, epoch_rows=rows, best_state=best_state)


def train_fold_with_restarts(run_attempt: Callable[[int], AttemptResult], restart_loss: float,
                             max_restarts: int) -> tuple[list[AttemptResult], AttemptResult, bool, bool]:
    """The restart rule: retrain while the fold's minimum validation loss is above `restart_loss`,
    at most `max_restarts` extra times. Returns (attempts, kept, success, cap_hit); when the cap is
    hit the attempt with the lowest validation loss is kept."""
    attempts: list[AttemptResult] = []
    for attempt in range(max_restarts + 1):
        result = run_attempt(attempt)
        attempts.append(result)
        if result.min_val_loss <= restart_loss:
            return attempts, result, True, False
    kept = min(attempts, key=lambda a: a.min_val_loss)
    return attempts, kept, False, True
