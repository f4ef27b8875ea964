"""Training (or reusing) each property's K fold models: one fold with the restart rule, the folds of all
properties shared by a pool of fold workers, each fold saved and logged as it ends (train_log_{p}.csv,
epoch_detail_{p}_{k}.csv)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cnn.config import CnnConfig
from cnn.fold_models import check_reusable, model_path, write_model_record
from cnn.images import to_tensor
from cnn.labels import LABEL_ID, labels_fingerprint
from cnn.training import (EPOCH_DETAIL_COLUMNS, AttemptResult, attempt_seed, fold_splits, train_attempt,
                          train_fold_with_restarts)
from common import artifacts
from common.devices import set_torch_threads
from common.checkpoints import load_state_strict, read_weights, save_weights
from common.config import dump_config
from common.errors import log_line
from common.fileio import atomic_write_csv, load_images
from common.paths import resolve_repo_path
from common.workers import spawned_pool

TRAIN_LOG_COLUMNS = ("fold_no", "success", "min_val_loss", "total_epochs", "best_epoch", "elapsed_time (s)",
                     "val_loss_list", "attempt", "seed", "val_auroc", "kept")


def _attempt_log_row(fold_no: int, attempt: AttemptResult, restart_loss: float, kept: bool) -> dict:
    return {"fold_no": fold_no, "success": attempt.min_val_loss <= restart_loss,
            "min_val_loss": round(attempt.min_val_loss, 6), "total_epochs": attempt.total_epochs,
            "best_epoch": attempt.best_epoch, "elapsed_time (s)": round(attempt.elapsed_time, 2),
            "val_loss_list": json.dumps([round(v, 6) for v in attempt.val_loss_list]),
            "attempt": attempt.attempt, "seed": attempt.seed, "val_auroc": round(attempt.best_auroc, 6), "kept": kept}


def _model_factory(config: CnnConfig, prop: str):
    """Fresh models of the property's CNN, or copies of the `init_from` model (fine-tuning)."""
    init_from = config.rule(prop).init_from
    if not init_from:
        return lambda: config.build_model(prop)
    path = resolve_repo_path(init_from)
    state = read_weights(path, missing_hint=f"train it first, or drop init_from of property {prop}")
    check = config.build_model(prop)
    load_state_strict(check, state, f"{path} (init_from of {prop}: needs the same resolution and width_multiplier)")

    def factory():
        model = config.build_model(prop)
        model.load_state_dict(state)
        return model
    return factory


def _train_fold(config: CnnConfig, prop: str, images: torch.Tensor, labels: np.ndarray, fold_no: int,
                train_idx: np.ndarray, val_idx: np.ndarray, progress: bool = True):
    """One fold with the restart rule, its per-epoch detail CSV written as it goes. Runs in this process or in a
    fold worker (module-level and picklable for that); the result depends only on the arguments."""
    set_torch_threads(config.num_threads)
    settings = config.train_settings(prop)
    model_factory = _model_factory(config, prop)
    detail_path = config.path("log_dir") / f"epoch_detail_{prop}_{fold_no}.csv"
    detail_rows: list[dict] = []

    def run_attempt(attempt: int) -> AttemptResult:
        seed = attempt_seed(config.seed, prop, fold_no, attempt)
        bar = tqdm(total=settings.max_epochs, desc=f"{prop} fold {fold_no} try {attempt}", unit="ep", leave=False,
                   disable=not progress)

        def on_epoch(row: dict) -> None:
            detail_rows.append({**row, "attempt": attempt})
            atomic_write_csv(pd.DataFrame(detail_rows)[[*EPOCH_DETAIL_COLUMNS, "attempt"]], detail_path)
            bar.update(1)
            bar.set_postfix(val_loss=f"{row['val_loss']:.4f}", auroc=f"{row['val_auroc']:.3f}")

        try:
            return train_attempt(prop, settings, images, labels, train_idx, val_idx, seed, attempt, on_epoch,
                                 model_factory=model_factory)
        finally:
            bar.close()

    return train_fold_with_restarts(run_attempt, settings.restart_loss, settings.max_restarts)


def fold_pool(workers: int):
    """A pool of fold workers (spawned), or None for one fold at a time."""
    return spawned_pool(workers)


class PropertyTraining:
    """The fold models of one property: which folds still need training, and saving/logging each as it ends."""

    def __init__(self, config: CnnConfig, prop: str, labels: np.ndarray, fingerprint: str, retrain: bool,
                 log=log_line):
        self.config, self.prop, self.labels, self.log = config, prop, labels, log
        self.settings = config.train_settings(prop)
        self.models_dir = config.path("models_dir")
        self.log_path = config.path("log_dir") / f"train_log_{prop}.csv"
        if retrain:
            for fold_no in range(config.num_folds):
                model_path(self.models_dir, prop, fold_no).unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)
        else:
            check_reusable(config, prop, fingerprint)
        write_model_record(config, prop, fingerprint)
        previous = (pd.read_csv(self.log_path, index_col=0) if self.log_path.is_file()
                    else pd.DataFrame(columns=TRAIN_LOG_COLUMNS))
        splits = fold_splits(prop, labels, config.num_folds, config.seed, stratified=config.rule(prop).stratified)
        self.rows_by_fold: dict[int, list[dict]] = {}
        self.todo: list[tuple[int, np.ndarray, np.ndarray]] = []
        for fold_no, (train_idx, val_idx) in enumerate(splits):
            done = previous[previous["fold_no"] == fold_no] if len(previous) else previous
            if model_path(self.models_dir, prop, fold_no).is_file() and len(done):
                self.rows_by_fold[fold_no] = done.to_dict("records")
                log(f"{prop} fold {fold_no}: reusing {model_path(self.models_dir, prop, fold_no)}")
            else:
                self.todo.append((fold_no, train_idx, val_idx))

    def finish(self, fold_no: int, result) -> None:
        attempts, kept, success, cap_hit = result
        prop, settings = self.prop, self.settings
        if cap_hit:
            self.log(f"{prop} fold {fold_no}: restart cap hit - min val loss stayed above {settings.restart_loss} in "
                     f"{len(attempts)} attempt(s) (max_restarts = {settings.max_restarts}); keeping attempt "
                     f"{kept.attempt} (min val loss {kept.min_val_loss:.4f})")
        save_weights(model_path(self.models_dir, prop, fold_no), kept.best_state)
        self.rows_by_fold[fold_no] = [_attempt_log_row(fold_no, a, settings.restart_loss, a is kept) for a in attempts]
        atomic_write_csv(_train_log_frame(self.rows_by_fold), self.log_path)
        self.log(f"{prop} fold {fold_no}: min val loss {kept.min_val_loss:.4f} at epoch {kept.best_epoch} "
                 f"of {kept.total_epochs}, val AUROC {kept.best_auroc:.3f} ({len(attempts)} attempt(s))")

    def train_log(self) -> pd.DataFrame:
        frame = _train_log_frame(self.rows_by_fold)
        atomic_write_csv(frame, self.log_path)
        return frame


def train_properties(config: CnnConfig, properties: list[str], images: torch.Tensor, labels: pd.DataFrame,
                     fingerprint: str, retrain: bool, log=log_line, pool=None) -> dict[str, pd.DataFrame]:
    """Train (or reuse) the K fold models of each property; returns the train log frame per property.

    With a `pool` (fold_pool) the missing folds of all properties share the workers (four properties x five folds on
    two workers is ten rounds, against twelve one property at a time); each fold is saved and logged when it ends."""
    runs = {prop: PropertyTraining(config, prop, labels[prop].to_numpy(), fingerprint, retrain, log)
            for prop in properties}
    jobs = [(prop, fold_no, train_idx, val_idx) for prop in properties for fold_no, train_idx, val_idx in runs[prop].todo]
    if pool is None:
        for prop, fold_no, train_idx, val_idx in jobs:
            runs[prop].finish(fold_no, _train_fold(config, prop, images, runs[prop].labels, fold_no, train_idx,
                                                   val_idx))
    elif jobs:
        from concurrent.futures import as_completed

        futures = {pool.submit(_train_fold, config, prop, images, runs[prop].labels, fold_no, train_idx, val_idx,
                               False): (prop, fold_no) for prop, fold_no, train_idx, val_idx in jobs}
        listing = "; ".join(f"{prop} {', '.join(str(f) for f, _, _ in runs[prop].todo)}"
                            for prop in properties if runs[prop].todo)
        log(f"training {len(jobs)} fold model(s) ({listing}) in {config.fold_workers} workers")
        for future in as_completed(futures):
            prop, fold_no = futures[future]
            runs[prop].finish(fold_no, future.result())
    return {prop: runs[prop].train_log() for prop in properties}


def _train_log_frame(rows_by_fold: dict[int, list[dict]]) -> pd.DataFrame:
    return pd.DataFrame([row for fold_no in sorted(rows_by_fold) for row in rows_by_fold[fold_no]],
                        columns=TRAIN_LOG_COLUMNS)


def train_on_labelled(config: CnnConfig, properties: list[str], images: pd.DataFrame, labels: pd.DataFrame,
                      retrain: bool, log=log_line) -> dict[str, pd.DataFrame]:
    """Load the labelled images, write the resolved config (only once they all read: bad input writes nothing) and
    train (or reuse) every property's fold models, in fold workers if configured."""
    labelled_images = images.set_index("img_no").loc[labels[LABEL_ID], "path"].tolist()
    pixels = to_tensor(load_images(labelled_images, config.resolution, progress=True))
    dump_config(config, config.path("log_dir") / artifacts.CNN_CONFIG_FILE)
    fingerprint = labels_fingerprint(labels, config.property_names)
    pool = fold_pool(config.fold_workers)
    try:
        return train_properties(config, properties, pixels, labels, fingerprint, retrain=retrain, log=log, pool=pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
