"""A property-score CNN trained, or reused from an earlier run: the record beside each model file of what it was
trained from and with (`<model>.info.json`), and training with its per-epoch log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from common.checkpoints import save_weights
from common.errors import PipelineError
from common.fileio import atomic_write_csv
from common.freshness import digest, read_record, what_differs, write_record
from common.paths import repo_relative
from property_score_cnn.config import PropertyCnnConfig
from property_score_cnn.dataset import Dataset
from property_score_cnn.models import build_model
from property_score_cnn.scoring import load_property_cnn
from property_score_cnn.training import TrainedCnn, train_regression_cnn


def scores_fingerprint(dataset: Dataset, names: tuple[str, ...]) -> str:
    """What the model learns from (scores_sha256 of its record): img_no and the score columns."""
    return digest(dataset.scores[["img_no", *(f"{n}_score" for n in names)]])


def info_path(model_path: Path) -> Path:
    """The record beside a model file of what it was trained from and with: `<model file>.info.json`."""
    return model_path.with_name(model_path.name + ".info.json")


def model_record(config: PropertyCnnConfig, kind: str, fingerprint: str) -> dict:
    """What the model is trained from and with; `config` is its kind's run (--model picks it)."""
    schedule = ({"lr_gamma": config.lr_gamma} if config.lr_schedule == "exponential"
                else {"cosine_t_max": config.cosine_t_max})
    return dict(kind=kind, resolution=config.resolution, width_multiplier=config.width_multiplier, seed=config.seed,
                val_fraction=config.val_fraction, scores_sha256=fingerprint,
                settings={k: v for k, v in dataclasses.asdict(config.loop_settings()).items()
                          if k != "device"},  # the same model on any device
                **schedule)


def check_reusable(config: PropertyCnnConfig, kind: str, fingerprint: str, log) -> bool:
    """True when the stored model may be reused; a model of other data or settings needs --retrain."""
    path = config.model_path(kind)
    if not path.is_file():
        return False
    stored = read_record(info_path(path))
    if stored is None:
        log(f"{kind}: using {repo_relative(path)} as given (no {info_path(path).name}; pass --retrain to train anew)")
        return True
    differs = what_differs(stored, model_record(config, kind, fingerprint))
    if differs:
        raise PipelineError(f"{path}: trained with {differs}; re-run with --retrain")
    return True


def _rounded(row: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}


def _train(config: PropertyCnnConfig, kind: str, dataset: Dataset, names: tuple[str, ...],
           criterion_names: tuple[str, ...], log_path: Path) -> TrainedCnn:
    settings = config.loop_settings()

    def make_scheduler(optimizer):
        if config.lr_schedule == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.cosine_t_max, eta_min=0.0)
    rows: list[dict] = []
    bar = tqdm(total=settings.max_epochs, desc=f"train {kind} CNN", unit="ep")

    def on_epoch(row: dict) -> None:
        rows.append(_rounded({"epoch": row["epoch"], "train_loss": row["train_loss"], "valid_loss": row["val_loss"],
                              "criterion": row["criterion"],
                              **{k: v for k, v in row.items() if k.endswith(("_loss", "_abs_diff", "_corr"))
                                 and k not in ("train_loss", "val_loss")}}))
        atomic_write_csv(pd.DataFrame(rows), log_path, index=False)
        bar.update(1)
        shown = {n: row[f"{n}_score_corr"] for n in criterion_names}
        bar.set_postfix(crit=f"{row['criterion']:.3f}", **{n[:6]: f"{r:.2f}" for n, r in shown.items()})

    try:
        return train_regression_cnn(lambda: build_model(kind, config.resolution, config.width_multiplier), dataset.images,
                                    dataset.targets, names, criterion_names, settings, config.val_fraction,
                                    make_scheduler=make_scheduler, on_epoch=on_epoch)
    finally:
        bar.close()


def train_or_reuse(config: PropertyCnnConfig, kind: str, dataset: Dataset, names: tuple[str, ...],
                   criterion_names: tuple[str, ...], log_name: str, retrain: bool, log):
    """(model in eval mode, trained?, best epoch, total epochs)."""
    fingerprint = scores_fingerprint(dataset, names)
    path = config.model_path(kind)
    if not retrain and check_reusable(config, kind, fingerprint, log):
        return load_property_cnn(path, config.resolution), False, None, None
    # A killed retraining must not leave the old model to be reused as if it were the new one.
    info_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    log_path = config.path("log_dir") / log_name
    trained = _train(config, kind, dataset, names, criterion_names, log_path)
    save_weights(path, trained.result.best_state)
    write_record(info_path(path), {
        **model_record(config, kind, fingerprint), "best_epoch": trained.result.best_epoch,
        "total_epochs": trained.result.total_epochs, "best_criterion": trained.result.best_criterion,
        "elapsed_time": round(trained.result.elapsed_time, 2), "scores_csv": repo_relative(dataset.source)})
    return trained.result.model, True, trained.result.best_epoch, trained.result.total_epochs
