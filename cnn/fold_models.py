"""Stage 2's fold model files: where they are, loading one, and the record beside them of what they were trained
from (model_info.json, one entry per property) that decides whether a re-run may reuse them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from cnn.config import CnnConfig
from common import artifacts
from common.checkpoints import load_state_strict, read_weights
from common.errors import PipelineError
from common.freshness import read_record, what_differs, write_record

MODEL_INFO_FILE = "model_info.json"
# What must match for stored models to be reused (a key missing from an older record is not compared).
REUSE_KEYS = ("resolution", "width_multiplier", "num_folds", "labels_sha256", "seed", "architecture", "init_from",
              "stratified")


def model_path(models_dir: Path, prop: str, fold_no: int) -> Path:
    return Path(artifacts.fold_model(str(models_dir), prop, fold_no))


def load_fold_model(config: CnnConfig, prop: str, fold_no: int) -> torch.nn.Module:
    path = model_path(config.path("models_dir"), prop, fold_no)
    model = config.build_model(prop)
    state = read_weights(path, missing_hint="re-run run_cnn.py to train it")
    if not isinstance(state, dict):
        raise PipelineError(f"{path}: not a state dict of the {prop} CNN; re-run run_cnn.py with --retrain")
    load_state_strict(model, state, f"{path} ({prop} CNN; re-run run_cnn.py with --retrain)")
    return model.eval()


def model_record(config: CnnConfig, prop: str, fingerprint: str) -> dict:
    """What the property's fold models are trained from and with (`fingerprint`: labels_fingerprint)."""
    rule = config.rule(prop)
    return dict(resolution=config.resolution, width_multiplier=config.width_multiplier, seed=config.seed,
                num_folds=config.num_folds, labels_sha256=fingerprint,
                architecture=json.loads(json.dumps(asdict(rule.architecture))), init_from=rule.init_from,
                stratified=rule.stratified, settings=asdict(config.train_settings(prop)))


def check_reusable(config: CnnConfig, prop: str, fingerprint: str) -> None:
    """Stored models must come from the same architecture and labels, else ask for --retrain."""
    info_path = config.path("models_dir") / MODEL_INFO_FILE
    trained = any(model_path(config.path("models_dir"), prop, k).is_file() for k in range(config.num_folds))
    stored = read_record(info_path, prop) if trained else None
    if stored is None:
        return
    differs = what_differs(stored, model_record(config, prop, fingerprint), REUSE_KEYS, missing_ok=True)
    if differs:
        raise PipelineError(f"{config.path('models_dir')}: {prop} models were trained with {differs}; "
                            f"re-run with --retrain")


def write_model_record(config: CnnConfig, prop: str, fingerprint: str) -> None:
    write_record(config.path("models_dir") / MODEL_INFO_FILE, model_record(config, prop, fingerprint), key=prop)
