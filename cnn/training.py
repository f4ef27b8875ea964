"""K-fold training of one property CNN (gender or quality), with the original's restart rule.

Runs on the shared loop (common/training_loop.py). Per fold: AdamW, BCE with sum reduction for the gradient (losses are reported as means),
cosine learning rate stepped once per epoch, early stopping on the validation loss, and the
best epoch's weights kept. If a fold's minimum validation loss stays above the property's
threshold the fold is retrained from a fresh initialisation, as the original does, but at most
`max_restarts` times; then the best attempt is kept and a log line says the cap was hit.
Every random choice (fold split, initialisation, batch order) comes from the run seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from cnn.models import build_property_cnn
from cnn.properties import seed_index
from common.errors import PipelineError
from common.training_loop import LoopSettings, predict, seeded_folds, train_model, train_with_restarts

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
    channels_last: bool = False
    device: str = "cpu"


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
    def best_criterion(self) -> float:
        """What train_with_restarts ranks attempts by when none is accepted."""
        return self.min_val_loss

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


def fold_splits(prop: str, labels: np.ndarray, num_folds: int, seed: int,
                stratified: bool | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index arrays, shuffled with `seed` (the original used unseeded splits):
    StratifiedKFold when `stratified` (default: quality only, as the original's stage 2), else KFold."""
    labels = np.asarray(labels)
    if stratified is None:
        stratified = prop == "quality"
    if len(labels) < num_folds:
        raise PipelineError(f"{prop}: {len(labels)} labelled images cannot be split into {num_folds} folds")
    if stratified:
        counts = np.bincount(labels.astype(int), minlength=2)
        if counts.min() < num_folds:
            raise PipelineError(f"{prop} labels have only {counts.min()} image(s) of class "
                                f"{int(counts.argmin())}; StratifiedKFold needs at least {num_folds}: label more images")
        return seeded_folds(len(labels), num_folds, seed, stratify=labels)
    return seeded_folds(len(labels), num_folds, seed)


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


def predict_scores(model: torch.nn.Module, images_uint8: torch.Tensor, batch_size: int,
                   channels_last: bool = False) -> np.ndarray:
    """Sigmoid scores of `model` in eval mode (dropout off), batched; `channels_last` feeds NHWC
    batches (give the model in that memory format too)."""
    if not len(images_uint8):
        return np.zeros(0, np.float32)
    if channels_last:
        return predict(model, images_uint8, batch_size,
                       lambda x: to_float_images(x).contiguous(memory_format=torch.channels_last)).numpy()
    return predict(model, images_uint8, batch_size, to_float_images).numpy()


def attempt_seed(base_seed: int, prop: str, fold_no: int, attempt: int) -> int:
    return base_seed * 1_000_003 + seed_index(prop) * 100_000 + fold_no * 1_000 + attempt


def flip_half(inputs: torch.Tensor, order_rng: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch: gender, quality, age and glasses are left-right symmetric
    and every crop is centred, so a flip is a free extra sample on small label sets."""
    flipped = (torch.rand(len(inputs), generator=order_rng) < 0.5).to(inputs.device)
    inputs[flipped] = inputs[flipped].flip(-1)
    return inputs


def bce_sum(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(scores, targets, reduction="sum")


def train_attempt(prop: str, settings: TrainSettings, images: torch.Tensor, labels: np.ndarray,
                  train_idx: np.ndarray, val_idx: np.ndarray, seed: int, attempt: int = 0,
                  on_epoch: Callable[[dict], None] | None = None,
                  model_factory: Callable[[], torch.nn.Module] | None = None) -> AttemptResult:
    """Train a freshly initialised model on `train_idx` until early stopping; keep the best epoch.
    `model_factory` (default: the property's CNN at the settings' resolution and width) is called
    right after seeding torch with `seed`."""
    if model_factory is None:
        def model_factory():
            return build_property_cnn(prop, settings.resolution, settings.width_multiplier)
    prepare = to_float_images
    if settings.channels_last:
        # NHWC convs run ~1.3-1.5x faster on CPU (oneDNN); the numbers differ from NCHW in the last bits
        base_factory = model_factory

        def model_factory():
            return base_factory().to(memory_format=torch.channels_last)

        def prepare(images_uint8):
            return to_float_images(images_uint8).contiguous(memory_format=torch.channels_last)
    loop_settings = LoopSettings(learning_rate=settings.learning_rate, train_batch_size=settings.train_batch_size,
                                 eval_batch_size=settings.eval_batch_size, max_epochs=settings.max_epochs,
                                 patience=settings.patience, seed=seed, loss_reduction="sum",
                                 device=settings.device)
    result = train_model(
        model_factory, images, torch.tensor(np.asarray(labels), dtype=torch.float32), train_idx, val_idx,
        bce_sum, loop_settings, prepare=prepare, augment=flip_half if settings.augment_flip else None,
        metrics_fn=lambda scores, targets: binary_metrics(scores, targets, settings.metric_threshold),
        make_scheduler=lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=settings.cosine_t_max, eta_min=0.0),
        on_epoch=None if on_epoch is None else lambda row: on_epoch(_detail_row(row)))
    return AttemptResult(attempt=attempt, seed=seed, min_val_loss=result.best_criterion, best_epoch=result.best_epoch,
                         total_epochs=result.total_epochs, elapsed_time=result.elapsed_time,
                         val_loss_list=[row["val_loss"] for row in result.rows],
                         epoch_rows=[_detail_row(row) for row in result.rows],
                         best_state={k: v.contiguous() for k, v in result.best_state.items()})


def _detail_row(row: dict) -> dict:
    return {key: row[key] for key in EPOCH_DETAIL_COLUMNS}


def train_fold_with_restarts(run_attempt: Callable[[int], AttemptResult], restart_loss: float,
                             max_restarts: int) -> tuple[list[AttemptResult], AttemptResult, bool, bool]:
    """The restart rule: retrain while the fold's minimum validation loss is above `restart_loss`,
    at most `max_restarts` extra times. Returns (attempts, kept, success, cap_hit); when the cap is
    hit the attempt with the lowest validation loss is kept."""
    kept, attempts, success = train_with_restarts(run_attempt, lambda a: a.min_val_loss <= restart_loss,
                                                  max_restarts)
    return attempts, kept, success, not success
