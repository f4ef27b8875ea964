"""One task-agnostic supervised training loop for every CNN of the project.

API (for stage 2, the glasses CNN and the property CNNs):

    split = seeded_split(n, val_fraction=0.1, seed=0)          # (train_idx, val_idx), seeded
    folds = seeded_folds(n, num_folds=5, seed=0)                # [(train_idx, val_idx)], seeded KFold
    folds = seeded_folds(n, 5, seed=0, stratify=labels)         # the same, stratified on integer labels
    result = train_model(
        model_factory=lambda: MyCNN(...),   # fresh model; torch.manual_seed(seed) is set before the call
        inputs=images_uint8,                # tensor [N, ...]; batches are `prepare(inputs[idx])`
        targets=targets,                    # tensor [N, ...]
        train_idx=split[0], val_idx=split[1],
        loss_fn=torch.nn.functional.mse_loss,        # (predictions, targets) -> scalar, used for the gradient
        settings=LoopSettings(learning_rate=5e-5, max_epochs=100, patience=20, seed=0),
        prepare=lambda x: x.float() / 255,           # uint8 batch -> model input (train and validation)
        augment=None,                                # optional (batch_inputs, generator) -> batch_inputs, train only
        metrics_fn=lambda pred, tgt: {"val_r": ...}, # optional, numpy arrays of the whole validation split -> dict
        criterion_fn=None,                           # optional (pred, tgt, metrics) -> float to minimise;
                                                     # default: loss_fn on the validation split
        make_scheduler=None,                         # optional optimizer -> scheduler stepped once per epoch
        on_epoch=None,                               # optional callback(row dict) for progress / CSV logs
    )
    result.model          # the best epoch's weights loaded, in eval mode
    result.best_epoch, result.best_criterion, result.rows (one dict per epoch: epoch, train_loss,
    val_loss, criterion, metrics...), result.best_state, result.seed

    kept, attempts, ok = train_with_restarts(lambda attempt: train_model(..., seed=f(attempt)),
                                             accept=lambda r: r.best_criterion <= 0.35, max_restarts=5)

Validation always runs in eval mode under inference_mode (dropout off), batched; the best epoch is
the one with the lowest criterion and early stopping triggers after `patience` epochs without
improvement. AdamW is the optimiser (every CNN of the original uses it). An empty `val_idx` trains
for exactly `max_epochs` and keeps the last epoch (models whose folds are validated outside the loop).

Settings for recipes that differ from the plain one (stage 2 and the glasses CNN use them):
`loss_reduction = "sum"` when loss_fn sums over the batch (stage 2's BCE, as the original; reported
losses are still per sample), `scheduler_step = "batch"` for per-step schedules (one-cycle), and
`min_batch_size` to skip a last batch too small for batch norm. `device` (common/devices.py) is where the model
trains; inputs stay where they are and move there a batch at a time, and the returned model is on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from common.errors import PipelineError


@dataclass
class TrainingSettings:
    """The supervised-training fields of a stage's profile section, declared once: stage 2's [cnn] (cnn/config.py)
    and stage 5's [property_cnn] (property_score_cnn/config.py) inherit them. A section gives its own defaults by
    keyword, `class CnnConfig(TrainingSettings, learning_rate=1e-3)`, and keeps the field's type and help; the
    defaults here are the values both sections share (else the original recipe's)."""

    seed: int = field(default=0, metadata={"help": "seeds the data split(s), initialisation and batch order"})
    width_multiplier: float = field(default=1.0, metadata={"help": "scales every conv's channel count"})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate"})
    train_batch_size: int = 32
    eval_batch_size: int = field(default=256, metadata={"help": "batch size of validation and scoring"})
    max_epochs: int = field(default=1000, metadata={"help": "epoch cap (the original had none)"})
    patience: int = field(default=4, metadata={"help": "early stopping: epochs without a better validation criterion"})
    cosine_t_max: int = field(default=10, metadata={
        "help": "epochs of the cosine learning-rate decay to 0 (CosineAnnealingLR T_max)"})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads (0: torch's default)"})

    def __init_subclass__(cls, **defaults):
        """`class Section(TrainingSettings, name=value, ...)`: these fields default to the values, same type and help
        (the section is then made a dataclass as usual)."""
        super().__init_subclass__()
        annotations = cls.__dict__.get("__annotations__", {})
        shared = TrainingSettings.__dataclass_fields__
        for name, value in defaults.items():
            if name not in shared:
                raise TypeError(f"{cls.__name__}: {name} is not a TrainingSettings field")
            annotations[name] = shared[name].type
            setattr(cls, name, field(default=value, metadata=shared[name].metadata))
        cls.__annotations__ = annotations

    def check_training(self, section: str) -> None:
        """One-line errors for settings the loop cannot run with (`section`: the profile table, for the message)."""
        for name in ("train_batch_size", "eval_batch_size", "max_epochs", "patience", "cosine_t_max"):
            if getattr(self, name) < 1:
                raise PipelineError(f"[{section}] {name} must be >= 1, got {getattr(self, name)}")
        for name in ("width_multiplier", "learning_rate"):
            if getattr(self, name) <= 0:
                raise PipelineError(f"[{section}] {name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class LoopSettings:
    learning_rate: float = 5e-5
    train_batch_size: int = 16
    eval_batch_size: int = 64
    max_epochs: int = 1000
    patience: int = 20
    seed: int = 0
    weight_decay: float = 0.01
    loss_reduction: str = "mean"  # how loss_fn reduces over a batch: "mean" or "sum"
    scheduler_step: str = "epoch"  # step the scheduler once per "epoch" or per "batch"
    min_batch_size: int = 1  # smaller training batches (the last one) are skipped
    device: str = "cpu"  # a torch device name (common/devices.py choose_device picks it)

    def __post_init__(self):
        if self.loss_reduction not in ("mean", "sum"):
            raise PipelineError(f"loss_reduction must be mean or sum, got '{self.loss_reduction}'")
        if self.scheduler_step not in ("epoch", "batch"):
            raise PipelineError(f"scheduler_step must be epoch or batch, got '{self.scheduler_step}'")


@dataclass
class LoopResult:
    model: torch.nn.Module
    seed: int
    best_epoch: int
    best_criterion: float
    rows: list[dict]
    elapsed_time: float
    best_state: dict[str, torch.Tensor] = field(repr=False)

    @property
    def total_epochs(self) -> int:
        return len(self.rows)


def seeded_split(num_items: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, validation) index split, reproducible from `seed` (the original's was unseeded)."""
    num_val = int(round(num_items * val_fraction))
    if num_items < 2 or num_val < 1 or num_val >= num_items:
        raise PipelineError(f"{num_items} samples cannot be split with validation fraction {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_items)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def seeded_folds(num_items: int, num_folds: int, seed: int,
                 stratify: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K-fold (train, validation) index pairs from `seed`: scikit-learn's KFold, or
    StratifiedKFold on the integer labels `stratify` (each fold keeps the class ratio), both
    with shuffle and random_state = seed (the original's splits were unseeded)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if num_items < num_folds:
        raise PipelineError(f"{num_items} samples cannot be split into {num_folds} folds")
    if stratify is None:
        return list(KFold(n_splits=num_folds, shuffle=True, random_state=seed).split(np.zeros(num_items)))
    labels = np.asarray(stratify).astype(int)
    counts = np.bincount(labels - labels.min())
    if counts.min() < num_folds:
        raise PipelineError(f"only {counts.min()} sample(s) of class {int(counts.argmin() + labels.min())}; "
                            f"StratifiedKFold needs at least {num_folds} per class")
    splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(num_items), labels))


@torch.inference_mode()
def predict(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int,
            prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> torch.Tensor:
    """Model outputs in eval mode, batched, on the CPU (each batch runs where the model is); the model's previous
    mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = [model(prepare(inputs[i:i + batch_size].to(device))).cpu() for i in range(0, len(inputs), batch_size)]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.zeros(0)


def train_model(model_factory: Callable[[], torch.nn.Module], inputs: torch.Tensor, targets: torch.Tensor,
                train_idx: np.ndarray, val_idx: np.ndarray,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                settings: LoopSettings,
                prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                metrics_fn: Callable[[np.ndarray, np.ndarray], dict] | None = None,
                criterion_fn: Callable[[torch.Tensor, torch.Tensor, dict], float] | None = None,
                make_scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
                on_epoch: Callable[[dict], None] | None = None) -> LoopResult:
    """Train a fresh model on `train_idx` with early stopping on the validation criterion; keep the best epoch."""
    if settings.max_epochs < 1:
        raise PipelineError("max_epochs must be at least 1")
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    model = model_factory().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = make_scheduler(optimizer) if make_scheduler is not None else None
    order_rng = torch.Generator().manual_seed(settings.seed)
    train_idx_t = torch.as_tensor(np.asarray(train_idx), dtype=torch.long)
    val_idx_t = torch.as_tensor(np.asarray(val_idx), dtype=torch.long)
    val_inputs, val_targets = inputs[val_idx_t], targets[val_idx_t]
    validate = len(val_idx_t) > 0
    per_batch_schedule = scheduler is not None and settings.scheduler_step == "batch"

    best_criterion, best_epoch, best_state = math.inf, -1, None
    rows: list[dict] = []
    start = time.perf_counter()
    for epoch in range(settings.max_epochs):
        model.train()
        loss_sum, seen = 0.0, 0
        for batch in train_idx_t[torch.randperm(len(train_idx_t), generator=order_rng)].split(settings.train_batch_size):
            if len(batch) < settings.min_batch_size:
                continue
            batch_inputs = prepare(inputs[batch].to(device))
            if augment is not None:
                batch_inputs = augment(batch_inputs, order_rng)
            loss = loss_fn(model(batch_inputs), targets[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_batch_schedule:
                scheduler.step()
            loss_sum += float(loss.item()) * (1 if settings.loss_reduction == "sum" else len(batch))
            seen += len(batch)
        if scheduler is not None and not per_batch_schedule:
            scheduler.step()
        if not validate:
            rows.append(dict(epoch=epoch, train_loss=loss_sum / max(seen, 1)))
            if on_epoch is not None:
                on_epoch(rows[-1])
            continue

        val_pred = predict(model, val_inputs, settings.eval_batch_size, prepare)
        val_loss_tensor = loss_fn(val_pred, val_targets)
        if settings.loss_reduction == "sum":
            val_loss_tensor = val_loss_tensor / len(val_pred)  # the same float32 division a mean does
        val_loss = float(val_loss_tensor.item())
        metrics = metrics_fn(val_pred.numpy(), val_targets.numpy()) if metrics_fn is not None else {}
        criterion = float(criterion_fn(val_pred, val_targets, metrics)) if criterion_fn is not None else val_loss
        row = dict(epoch=epoch, train_loss=loss_sum / max(seen, 1), val_loss=val_loss, criterion=criterion, **metrics)
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if criterion < best_criterion:
            best_criterion, best_epoch = criterion, epoch
            best_state = _cpu_state(model)
        elif epoch - best_epoch >= settings.patience:
            break
    if best_state is None:  # no validation, or every criterion was NaN: the last epoch
        best_state, best_epoch = _cpu_state(model), len(rows) - 1
    model.to("cpu").load_state_dict(best_state)
    model.eval()
    return LoopResult(model=model, seed=settings.seed, best_epoch=best_epoch, best_criterion=best_criterion,
                      rows=rows, elapsed_time=time.perf_counter() - start, best_state=best_state)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_with_restarts(run_attempt: Callable[[int], LoopResult], accept: Callable[[LoopResult], bool],
                        max_restarts: int) -> tuple[LoopResult, list[LoopResult], bool]:
    """Retrain from scratch until `accept(result)` (stage 2's restart rule), at most `max_restarts`
    extra times. Returns (kept, attempts, accepted); without acceptance the lowest criterion is kept."""
    attempts: list[LoopResult] = []
    for attempt in range(max_restarts + 1):
        result = run_attempt(attempt)
        attempts.append(result)
        if accept(result):
            return result, attempts, True
    return min(attempts, key=lambda r: r.best_criterion), attempts, False
