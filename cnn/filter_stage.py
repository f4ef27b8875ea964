"""Stage 2 (and stage 7's v8 dataset): label, train one CNN ensemble per binary property, score
every image, keep the ones the keep rule accepts.

The properties, their CNNs, label columns and keep rule come from the config's `properties` table
(cnn/properties.py): stage 2 is gender and quality, `--stage v8_dataset` adds age and glass.
Inputs: stage 1's `{images_dir}/{i:06d}.png|jpg` and the label file (id column + one 0/1 column per
property), supplied by the user (celeba256) or written by the bundled annotator (embedded,
`cnn/annotate.py`; hand labels are never overwritten). Outputs, with the original's names and
columns: `{models_dir}/{p}_model_{k}.pt`, `{log_dir}/train_log_{p}.csv`,
`{log_dir}/epoch_detail_{p}_{k}.csv`, `{inference_dir}/{p}.csv`, the merged scores CSV and the
kept images in `filtered_dir`, plus the kept-vs-rejected grid and the funnel PNG.

Re-runs reuse finished work: trained folds are kept (a killed run resumes at the next fold)
unless retrain is asked for, and inference is redone only when models or images changed.
"""

from __future__ import annotations

import hashlib
import json
import filecmp
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cnn.annotate import LABEL_COLUMNS, SIGNAL_COLUMNS, AnnotatorThresholds, FaceAnnotator
from cnn.models import SUPPORTED_RESOLUTIONS, build_property_cnn
from cnn.properties import PropertyRule, parse_property_rules
from cnn.training import (EPOCH_DETAIL_COLUMNS, AttemptResult, TrainSettings, attempt_seed, fold_splits,
                          predict_scores, train_attempt, train_fold_with_restarts)
from common.checkpoints import load_state_strict, read_weights, save_weights
from common.config import dump_config
from common.devices import DEVICE_HELP, check_device_name, choose_device
from common.paths import repo_relative, resolve_repo_path
from common.errors import PipelineError, log_line
from common.fileio import IMAGE_NAME, atomic_path, atomic_write_csv, atomic_write_text, load_image, load_images, read_csv_checked
from common.images import make_grid
from common.workers import spawned_pool

LABEL_ID = "img_name"  # the id column's name inside the stage, whatever the labels file calls it
ANNOTATOR_SOURCE = "annotator"
TRAIN_LOG_COLUMNS = ("fold_no", "success", "min_val_loss", "total_epochs", "best_epoch", "elapsed_time (s)",
                     "val_loss_list", "attempt", "seed", "val_auroc", "kept")
MODEL_INFO_FILE = "model_info.json"


@dataclass
class CnnConfig:
    profile: str = "embedded"
    resolution: int = field(default=64, metadata={"help": "image size of the stage-1 images (64, 128 or 256)"})
    images_dir: str = "stylegan/synthesize_results"
    labels_csv: str = field(default="cnn/synthesize_results_quality_and_gender.csv",
                            metadata={"help": "labels: the id column and one 0/1 column per property"})
    label_id_column: str = field(default="img_name", metadata={"help": "image number column of the labels file"})
    properties: dict = field(default_factory=lambda: {
        "gender": {"keep_min": 0.7}, "quality": {"keep_min": 0.9}}, metadata={
        "help": "JSON table: property -> its settings (see cnn/properties.py)"})
    keep_labelled: bool = field(default=True, metadata={
        "help": "labelled images may be kept (stage 2); false excludes them (the v8 dataset)"})
    num_labelled: int = field(default=2000, metadata={"help": "how many of the first images the annotator labels"})
    annotate: bool = field(default=False, metadata={"help": "write missing labels with the bundled annotator"})
    annotator_min_face_probability: float = 0.8
    annotator_min_eye_distance_ratio: float = 0.2
    annotator_min_strip_sharpness: float = 0.55
    annotator_female_threshold: float = 0.5
    annotator_old_age: float = 48.0
    annotator_glasses_threshold: float = field(default=-1.0, metadata={
        "help": "glasses probability for glass = 1; < 0 uses the threshold stored with cnn/glasses_model.pt"})
    models_dir: str = "cnn/models"
    log_dir: str = "cnn/log"
    inference_dir: str = "cnn/inference_result"
    all_scores_csv: str = "cnn/all_image_quality_and_gender.csv"
    report_grid: str = "cnn/kept_vs_rejected.png"
    filtered_dir: str = "stylegan/synthesize_results_filtered"
    link_mode: str = field(default="copy", metadata={"help": "copy or hardlink the kept images"})
    seed: int = field(default=0, metadata={"help": "seeds fold splits, initialisation and batch order"})
    num_folds: int = 5
    width_multiplier: float = field(default=1.0, metadata={"help": "scales every conv's channel count"})
    learning_rate: float = 5e-5
    augment_flip: bool = field(default=False, metadata={"help": "mirror half of each training batch"})
    channels_last: bool = field(default=False, metadata={"help": "NHWC training (faster on CPU, not bit-equal)"})
    train_batch_size: int = 16
    eval_batch_size: int = 64
    max_epochs: int = 1000
    patience: int = field(default=20, metadata={"help": "early stopping: epochs without a new best val loss"})
    cosine_t_max: int = 10
    max_restarts: int = field(default=5, metadata={"help": "cap on the restart rule's retrainings per fold"})
    funnel_png: str = "cnn/funnel.png"
    skip_scarce_properties: bool = field(default=False, metadata={
        "help": "leave out (logged, no keep rule) a property whose rarer class has fewer labelled images than "
                "num_folds, instead of stopping the stage"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    audit_kept: int = field(default=0, metadata={
        "help": "annotate a seeded sample of this many kept images and report the annotator's fractions in the "
                "funnel (a check of the filter; 0: off)"})
    fold_workers: int = field(default=1, metadata={
        "help": "train this many folds at once in worker processes (each with num_threads threads); the models "
                "are the same as one at a time"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})

    def validate(self) -> None:
        check_device_name(self.device, "[cnn] device")
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise PipelineError(f"[cnn] resolution must be one of {', '.join(map(str, SUPPORTED_RESOLUTIONS))}, "
                                f"got {self.resolution}")
        if self.link_mode not in ("copy", "hardlink"):
            raise PipelineError(f"[cnn] link_mode must be copy or hardlink, got '{self.link_mode}'")
        for name in ("num_labelled", "train_batch_size", "eval_batch_size", "max_epochs", "patience", "cosine_t_max"):
            if getattr(self, name) < 1:
                raise PipelineError(f"[cnn] {name} must be >= 1, got {getattr(self, name)}")
        if self.fold_workers < 1:
            raise PipelineError(f"[cnn] fold_workers must be >= 1, got {self.fold_workers}")
        if self.num_folds < 2:
            raise PipelineError(f"[cnn] num_folds must be >= 2, got {self.num_folds}")
        if self.max_restarts < 0 or self.width_multiplier <= 0 or self.learning_rate <= 0:
            raise PipelineError("[cnn] max_restarts must be >= 0, width_multiplier and learning_rate > 0")
        self.rules()  # a bad properties table fails here, before any work

    def rules(self) -> list[PropertyRule]:
        return parse_property_rules(self.properties)

    def rule(self, prop: str) -> PropertyRule:
        return next(r for r in self.rules() if r.name == prop)

    @property
    def property_names(self) -> list[str]:
        return [r.name for r in self.rules()]

    def thresholds(self) -> AnnotatorThresholds:
        return AnnotatorThresholds(
            min_face_probability=self.annotator_min_face_probability,
            min_eye_distance_ratio=self.annotator_min_eye_distance_ratio,
            min_strip_sharpness=self.annotator_min_strip_sharpness,
            female_threshold=self.annotator_female_threshold, old_age=self.annotator_old_age,
            glasses_threshold=self.annotator_glasses_threshold)

    def train_settings(self, prop: str) -> TrainSettings:
        rule = self.rule(prop)
        return TrainSettings(
            resolution=self.resolution, width_multiplier=self.width_multiplier,
            learning_rate=rule.learning_rate if rule.learning_rate is not None else self.learning_rate,
            train_batch_size=self.train_batch_size, eval_batch_size=self.eval_batch_size,
            max_epochs=self.max_epochs, patience=self.patience, cosine_t_max=self.cosine_t_max,
            max_restarts=self.max_restarts, restart_loss=rule.restart_loss,
            metric_threshold=rule.metric_threshold, num_folds=self.num_folds, seed=self.seed,
            augment_flip=self.augment_flip, channels_last=self.channels_last,
            device=str(choose_device(self.device)))

    def build_model(self, prop: str) -> torch.nn.Module:
        return build_property_cnn(prop, self.resolution, self.width_multiplier, self.rule(prop).architecture)

    def path(self, name: str) -> Path:
        return resolve_repo_path(getattr(self, name))


# ----------------------------------------------------------------------------------------------
# Inputs


def list_generated_images(images_dir: Path) -> pd.DataFrame:
    """img_no and path of every stage-1 image, sorted by img_no."""
    if not images_dir.is_dir():
        raise PipelineError(f"{images_dir}: stage-1 folder not found; run run_original_generator.py first")
    rows = []
    for path in images_dir.iterdir():
        match = IMAGE_NAME.match(path.name)
        if match and path.is_file():
            rows.append((int(match.group(1)), path))
    if not rows:
        raise PipelineError(f"{images_dir}: no {{img_no:06d}}.png/.jpg images; run run_original_generator.py first")
    frame = pd.DataFrame(rows, columns=["img_no", "path"]).sort_values("img_no", kind="stable")
    duplicated = frame["img_no"].duplicated()
    if duplicated.any():
        img_no = int(frame.loc[duplicated, "img_no"].iloc[0])
        raise PipelineError(f"{images_dir}: image {img_no:06d} exists as both .png and .jpg; remove one")
    return frame.reset_index(drop=True)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def read_labels(path: Path, id_column: str = "img_name",
                label_columns: tuple[str, ...] = ("quality", "gender")) -> pd.DataFrame:
    """The label file as img_name + label_columns (ints 0/1), plus label_source if present; the id
    column is renamed to img_name inside the stage."""
    frame = read_csv_checked(path, "fix it, or delete it to have the annotator write it again (embedded)")
    required = (id_column, *label_columns)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)} "
                            "(one 0/1 column per property: quality 1 = good, gender 1 = female, age 1 = looks old, "
                            "glass 1 = wears glasses)")
    if frame.empty:
        raise PipelineError(f"{path}: no label rows")
    for column in required:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if column != id_column:
            bad |= ~values.isin([0, 1])
        elif not bad.any():
            bad |= values < 0
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise PipelineError(f"{path}: row {row + 2} has {column} = '{frame[column].iloc[row]}'; expected "
                                + ("a non-negative image number" if column == id_column else "0 or 1"))
        frame[column] = values.astype(int)
    if frame[id_column].duplicated().any():
        img = int(frame.loc[frame[id_column].duplicated(), id_column].iloc[0])
        raise PipelineError(f"{path}: {id_column} {img} appears more than once")
    keep = list(required) + (["label_source"] if "label_source" in frame.columns else [])
    frame = frame[keep].rename(columns={id_column: LABEL_ID})
    return frame.sort_values(LABEL_ID, kind="stable").reset_index(drop=True)


def config_labels(config: CnnConfig, path: Path | None = None) -> pd.DataFrame:
    """The config's labels file, with one column per property named after the property."""
    rules = config.rules()
    labels = read_labels(path or config.path("labels_csv"), config.label_id_column,
                         tuple(r.label_column for r in rules))
    return labels.rename(columns={r.label_column: r.name for r in rules})


def labels_fingerprint(labels: pd.DataFrame, properties: list[str]) -> str:
    text = labels[[LABEL_ID, *properties]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_annotator_labels(config: CnnConfig, images: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """Annotate the first num_labelled images; write the label CSV (with label_source) and the raw
    signals beside it. Returns the label frame."""
    unknown = [r.name for r in config.rules() if r.name not in LABEL_COLUMNS]
    if unknown:
        raise PipelineError(f"the bundled annotator labels only {', '.join(LABEL_COLUMNS)}, not {', '.join(unknown)}; "
                            f"supply {config.path('labels_csv')} by hand")
    chosen = images.iloc[:min(config.num_labelled, len(images))]
    pixels = load_images(list(chosen["path"]), config.resolution, progress=progress)
    annotator = FaceAnnotator(config.thresholds())
    annotated = annotator.annotate(list(pixels), progress=progress)
    annotated.insert(0, LABEL_ID, chosen["img_no"].to_numpy())
    rules = config.rules()
    labels = annotated[[LABEL_ID, *(r.name for r in rules)]].copy()
    labels["label_source"] = ANNOTATOR_SOURCE
    labels_path = config.path("labels_csv")
    written = labels.rename(columns={LABEL_ID: config.label_id_column, **{r.name: r.label_column for r in rules}})
    atomic_write_csv(written, labels_path, index=False)
    signals_path = labels_path.with_name("annotator_signals.csv")
    atomic_write_csv(annotated[[LABEL_ID, *SIGNAL_COLUMNS, *LABEL_COLUMNS]].round(6), signals_path, index=False)
    return labels


# ----------------------------------------------------------------------------------------------
# Training with reuse


def model_path(models_dir: Path, prop: str, fold_no: int) -> Path:
    return models_dir / f"{prop}_model_{fold_no}.pt"


def load_fold_model(config: CnnConfig, prop: str, fold_no: int) -> torch.nn.Module:
    path = model_path(config.path("models_dir"), prop, fold_no)
    model = config.build_model(prop)
    state = read_weights(path, missing_hint="re-run run_cnn.py to train it")
    if not isinstance(state, dict):
        raise PipelineError(f"{path}: not a state dict of the {prop} CNN; re-run run_cnn.py with --retrain")
    load_state_strict(model, state, f"{path} ({prop} CNN; re-run run_cnn.py with --retrain)")
    return model.eval()


def _model_info(config: CnnConfig, prop: str, fingerprint: str) -> dict:
    rule = config.rule(prop)
    return dict(resolution=config.resolution, width_multiplier=config.width_multiplier, seed=config.seed,
                num_folds=config.num_folds, labels_sha256=fingerprint,
                architecture=json.loads(json.dumps(asdict(rule.architecture))), init_from=rule.init_from,
                stratified=rule.stratified, settings=asdict(config.train_settings(prop)))


def _check_reusable(config: CnnConfig, prop: str, fingerprint: str) -> None:
    """Stored models must come from the same architecture and labels, else ask for --retrain."""
    info_path = config.path("models_dir") / MODEL_INFO_FILE
    trained = any(model_path(config.path("models_dir"), prop, k).is_file() for k in range(config.num_folds))
    if not trained or not info_path.is_file():
        return
    try:
        stored = json.loads(info_path.read_text()).get(prop)
    except json.JSONDecodeError:
        raise PipelineError(f"{info_path}: not valid JSON; re-run with --retrain") from None
    if stored is None:
        return
    current = _model_info(config, prop, fingerprint)
    for key in ("resolution", "width_multiplier", "num_folds", "labels_sha256", "seed", "architecture",
                "init_from", "stratified"):
        if key in stored and stored.get(key) != current[key]:
            raise PipelineError(f"{config.path('models_dir')}: {prop} models were trained with {key} = "
                                f"{stored.get(key)!r}, now {current[key]!r}; re-run with --retrain")


def _write_model_info(config: CnnConfig, prop: str, fingerprint: str) -> None:
    info_path = config.path("models_dir") / MODEL_INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[prop] = _model_info(config, prop, fingerprint)
    atomic_write_text(info_path, json.dumps(info, indent=2, sort_keys=True) + "\n")


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
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
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
            _check_reusable(config, prop, fingerprint)
        _write_model_info(config, prop, fingerprint)
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


# ----------------------------------------------------------------------------------------------
# Inference, merge, filter


def ensemble_average(per_model_scores: np.ndarray) -> np.ndarray:
    """[models, images] -> arithmetic mean over models, rounded to 4 decimals as the original."""
    return np.round(np.asarray(per_model_scores, np.float64).mean(axis=0), 4)




def _inference_is_current(csv_path: Path, img_nos: np.ndarray, model_paths: list[Path]) -> bool:
    if not csv_path.is_file():
        return False
    newest_model = max(p.stat().st_mtime for p in model_paths)
    if csv_path.stat().st_mtime < newest_model:
        return False
    try:
        existing = pd.read_csv(csv_path, usecols=["img_no"])["img_no"].to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return False
    return np.array_equal(existing, img_nos)


def run_inference(config: CnnConfig, unlabelled: pd.DataFrame, force: bool, chunk: int = 512,
                  log=log_line, properties: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Score the unlabelled images with each property's K models (eval mode, batched); every image
    is read once for all properties whose CSV is not current. `properties`: default all of the config's."""
    out = {}
    inference_dir = config.path("inference_dir")
    img_nos = unlabelled["img_no"].to_numpy()
    todo = []
    for prop in properties if properties is not None else config.property_names:
        csv_path = inference_dir / f"{prop}.csv"
        paths = [model_path(config.path("models_dir"), prop, k) for k in range(config.num_folds)]
        if not force and _inference_is_current(csv_path, img_nos, paths):
            out[prop] = pd.read_csv(csv_path)
            log(f"{prop}: reusing {csv_path} ({len(img_nos)} images)")
        else:
            todo.append(prop)
    if not todo:
        return out
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    device = choose_device(config.device)
    models = {prop: [load_fold_model(config, prop, k).to(device, memory_format=memory_format)
                     for k in range(config.num_folds)] for prop in todo}
    scores = {prop: np.zeros((config.num_folds, len(unlabelled)), np.float64) for prop in todo}
    bar = tqdm(total=len(unlabelled), desc=f"inference ({', '.join(todo)})", unit="img")
    for start in range(0, len(unlabelled), chunk):
        part = unlabelled.iloc[start:start + chunk]
        batch = to_tensor(load_images(list(part["path"]), config.resolution))
        for prop in todo:
            for k, model in enumerate(models[prop]):
                scores[prop][k, start:start + len(part)] = predict_scores(model, batch, config.eval_batch_size,
                                                                          config.channels_last)
        bar.update(len(part))
    bar.close()
    for prop in todo:
        frame = pd.DataFrame({"img_no": img_nos, "img_path": [repo_relative(p) for p in unlabelled["path"]],
                              f"property_{prop}_final_score": ensemble_average(scores[prop])})
        for k in range(config.num_folds):
            frame[f"score_model_{k}"] = np.round(scores[prop][k], 4)
        atomic_write_csv(frame, inference_dir / f"{prop}.csv", index=False)
        out[prop] = frame
    return out


def merge_scores(images: pd.DataFrame, labels: pd.DataFrame, inference: dict[str, pd.DataFrame],
                 properties: list[str]) -> pd.DataFrame:
    """One row per generated image: labels for labelled images, ensemble scores for the rest."""
    frame = pd.DataFrame({"img_no": images["img_no"].to_numpy(),
                          "img_path": [repo_relative(p) for p in images["path"]]})
    for prop in properties:
        scores = dict(zip(labels[LABEL_ID], labels[prop].astype(float)))
        predicted = inference.get(prop)
        if predicted is not None:
            scores.update(zip(predicted["img_no"], predicted[f"property_{prop}_final_score"]))
        frame[f"{prop}_score"] = frame["img_no"].map(scores).astype(float)
    return frame


def rule_passes(scores: pd.DataFrame, rule: PropertyRule) -> np.ndarray:
    """Images whose score satisfies this property's part of the keep rule (bounds inclusive)."""
    values = scores[f"{rule.name}_score"].to_numpy()
    ok = np.ones(len(values), bool)
    if rule.keep_min is not None:
        ok &= values >= rule.keep_min
    if rule.keep_max is not None:
        ok &= values <= rule.keep_max
    return ok


def keep_mask(scores: pd.DataFrame, rules: list[PropertyRule], labelled: np.ndarray | None = None) -> np.ndarray:
    """Every property's rule holds, and (when `labelled` is given) the image is not labelled."""
    kept = np.ones(len(scores), bool)
    for rule in rules:
        kept &= rule_passes(scores, rule)
    if labelled is not None:
        kept &= ~np.asarray(labelled, bool)
    return kept


def export_kept(paths: list[Path], filtered_dir: Path, link_mode: str, resolution: int | None = None) -> int:
    """Copy (or hard-link) the kept images unchanged; drop stale images of earlier runs. Every source is decoded and
    checked first (a truncated or wrong-size image stops the stage instead of replacing a good copy), and a copy is
    kept only when its bytes equal the source's."""
    filtered_dir.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in paths}
    for existing in filtered_dir.iterdir():
        if IMAGE_NAME.match(existing.name) and existing.name not in wanted:
            existing.unlink()
    written = 0
    for name, source in wanted.items():
        load_image(source, resolution)
        target = filtered_dir / name
        if target.is_file() and filecmp.cmp(target, source, shallow=False):
            continue
        target.unlink(missing_ok=True)
        if link_mode == "hardlink":
            try:
                os.link(source, target)
                written += 1
                continue
            except OSError:
                pass  # other file system: fall back to a copy
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        written += 1
    return written


def save_report_grid(kept: pd.DataFrame, rejected: pd.DataFrame, path: Path, resolution: int,
                     properties: list[str], per_side: int = 16) -> None:
    """Kept examples on top, rejected below, each tile captioned with its scores (first letter of
    each property); small images are shown 2x."""
    import cv2

    from common.fileio import save_image

    scale = 2 if resolution < 128 else 1
    tile = resolution * scale
    caption_height = 12 * len(properties) + 4
    blocks = []
    for title, chosen, colour in (("kept", kept, (0, 140, 0)), ("rejected", rejected, (200, 0, 0))):
        shown = chosen.iloc[:per_side]
        pixels = load_images([resolve_repo_path(p) for p in shown["img_path"]], resolution) if len(shown) else \
            np.full((1, resolution, resolution, 3), 255, np.uint8)
        tiles = []
        for i, image in enumerate(pixels):
            big = image.repeat(scale, axis=0).repeat(scale, axis=1)
            caption = np.full((caption_height, tile, 3), 255, np.uint8)
            if len(shown):
                for line, prop in enumerate(properties):
                    cv2.putText(caption, f"{prop[:1]} {shown[f'{prop}_score'].iloc[i]:.3f}", (3, 11 + 12 * line),
                                cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.concatenate([big, caption]))
        grid = make_grid(np.stack(tiles), ncols=8)
        header = np.full((28, grid.shape[1], 3), 255, np.uint8)
        cv2.putText(header, f"{title}: {len(chosen)} (first {len(shown)} shown)", (6, 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 1, cv2.LINE_AA)
        blocks.append(np.concatenate([header, grid]))
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    save_image(np.concatenate(blocks), path)


# ----------------------------------------------------------------------------------------------
# The stage


@dataclass
class StageSummary:
    generated: int
    labelled: int
    labelled_by_annotator: int
    kept: int
    kept_labelled: int
    kept_predicted: int
    fold_auroc: dict[str, list[float]]
    restart_caps_hit: dict[str, int]
    seconds: float
    outputs: dict[str, str]
    # images failing each property's rule (an image can fail several); labelled ones excluded if so configured
    rejected_by: dict[str, int] = field(default_factory=dict)
    excluded_labelled: int = 0
    # properties left out for too few labels of one class (skip_scarce_properties): name -> reason
    skipped: dict[str, str] = field(default_factory=dict)
    # the annotator's label fractions on a sample of the kept images (audit_kept): label -> fraction, + "sample"
    kept_audit: dict[str, float] = field(default_factory=dict)

    def funnel_line(self) -> str:
        source = f", {self.labelled_by_annotator} by the annotator" if self.labelled_by_annotator else ""
        rejected = ", ".join(f"{prop} {count}" for prop, count in self.rejected_by.items())
        excluded = f"; {self.excluded_labelled} labelled excluded" if self.excluded_labelled else ""
        skipped = "".join(f"; {prop} not filtered ({why})" for prop, why in self.skipped.items())
        audit = ""
        if self.kept_audit:
            audit = f"; annotator on {int(self.kept_audit['sample'])} kept: " + ", ".join(
                f"{label} {100 * value:.1f} %" for label, value in self.kept_audit.items() if label != "sample")
        return (f"funnel: generated {self.generated} -> labelled {self.labelled}{source} -> kept {self.kept} "
                f"({self.kept_labelled} labelled + {self.kept_predicted} predicted)"
                + (f"; rejected by {rejected}" if rejected else "") + excluded + skipped + audit)


def save_funnel_plot(summary: StageSummary, path: Path) -> None:
    """Bars: generated, labelled, candidates, rejections per property, kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["generated", "labelled"] + [f"fails {p}" for p in summary.rejected_by] + \
        (["labelled excluded"] if summary.excluded_labelled else []) + ["kept"]
    values = [summary.generated, summary.labelled, *summary.rejected_by.values()] + \
        ([summary.excluded_labelled] if summary.excluded_labelled else []) + [summary.kept]
    colours = ["#777777", "#4477aa"] + ["#cc6677"] * len(summary.rejected_by) + \
        (["#ddcc77"] if summary.excluded_labelled else []) + ["#117733"]
    figure, axes = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6))
    bars = axes.bar(names, values, color=colours)
    axes.bar_label(bars, labels=[str(v) for v in values], fontsize=8)
    axes.set_ylabel("images")
    axes.set_title(summary.funnel_line().replace("; ", "\n", 1), fontsize=8)
    axes.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


AUDIT_NAMES = {"gender": "female", "quality": "good quality", "age": "old", "glass": "glasses"}


def audit_kept_images(config: CnnConfig, kept_images: pd.DataFrame, log=log_line) -> dict[str, float]:
    """The annotator's fractions (female, good quality, old, glasses) on a seeded sample of the kept images,
    written to `{log_dir}/kept_audit.csv`; a re-run with the same sample reads that file instead."""
    count = min(config.audit_kept, len(kept_images))
    if count == 0:
        return {}
    rng = np.random.default_rng([config.seed, 7])
    chosen = kept_images.iloc[np.sort(rng.choice(len(kept_images), count, replace=False))]
    path = config.path("log_dir") / "kept_audit.csv"
    audit = pd.read_csv(path) if path.is_file() else None
    if audit is None or audit["img_no"].tolist() != chosen["img_no"].tolist():
        log(f"annotating {count} of the {len(kept_images)} kept images (audit_kept)")
        pixels = load_images(list(chosen["path"]), config.resolution)
        labels = FaceAnnotator(config.thresholds()).annotate(list(pixels))[list(LABEL_COLUMNS)]
        audit = pd.concat([pd.DataFrame({"img_no": chosen["img_no"].to_numpy()}), labels], axis=1)
        atomic_write_csv(audit, path, index=False)
    return {"sample": float(count), **{AUDIT_NAMES.get(c, c): round(float(audit[c].mean()), 4) for c in LABEL_COLUMNS}}


def plan(config: CnnConfig) -> list[str]:
    labels_path = config.path("labels_csv")
    missing = f"annotate the first {config.num_labelled}" if config.annotate else "must be supplied"
    rules = config.rules()
    keep = " and ".join(r.keep_text() for r in rules) + ("" if config.keep_labelled else " and not labelled")
    return [f"images: {config.path('images_dir')} ({config.resolution}x{config.resolution})",
            f"labels: {labels_path} " + ("(exists)" if labels_path.is_file() else f"(missing: {missing})"),
            f"train: {len(rules)} x {config.num_folds} CNNs ({', '.join(r.name for r in rules)}), width "
            f"x{config.width_multiplier}, lr {config.learning_rate}, <= {config.max_epochs} epochs, patience "
            f"{config.patience}, <= {config.max_restarts} restarts per fold",
            f"keep: {keep} -> {config.path('filtered_dir')} ({config.link_mode})"]


def obtain_labels(config: CnnConfig, images: pd.DataFrame, force: bool, log=log_line) -> pd.DataFrame:
    labels_path = config.path("labels_csv")
    if labels_path.is_file():
        labels = config_labels(config)
        from_annotator = "label_source" in labels and (labels["label_source"] == ANNOTATOR_SOURCE).all()
        if not (force and from_annotator and config.annotate):
            return labels  # hand labels (or --force not given): never overwritten
        log(f"re-annotating {labels_path} (--force)")
    elif not config.annotate:
        columns = ", ".join([config.label_id_column, *(r.label_column for r in config.rules())])
        raise PipelineError(f"{labels_path}: label file not found; supply it (columns {columns}; "
                            "see README, 'Stage 2 labels') or pass --annotate to label with the bundled annotator")
    else:
        log(f"{labels_path} not found: annotating the first {min(config.num_labelled, len(images))} images")
    return write_annotator_labels(config, images)


def run_filter_stage(config: CnnConfig, retrain: bool = False, force: bool = False, log=log_line) -> StageSummary:
    """The whole stage; torch's thread count is set from the config for its duration only."""
    previous_threads = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    try:
        return _run_filter_stage(config, retrain, force, log)
    finally:
        torch.set_num_threads(previous_threads)


def scarce_properties(config: CnnConfig, labels: pd.DataFrame) -> dict[str, str]:
    """Properties whose rarer class has fewer labelled images than folds: name -> reason."""
    scarce = {}
    for prop in config.property_names:
        counts = np.bincount(labels[prop].to_numpy().astype(int), minlength=2)
        if counts.min() < config.num_folds:
            scarce[prop] = (f"{counts.min()} of {len(labels)} labelled images are {int(counts.argmin())}, "
                            f"fewer than the {config.num_folds} folds")
    return scarce


def _run_filter_stage(config: CnnConfig, retrain: bool, force: bool, log) -> StageSummary:
    start = time.perf_counter()
    images = list_generated_images(config.path("images_dir"))
    labels = obtain_labels(config, images, force, log=log)
    present = labels[LABEL_ID].isin(images["img_no"])
    if not present.all():
        log(f"ignoring {int((~present).sum())} label row(s) for images that were not generated")
        labels = labels[present].reset_index(drop=True)
    if labels.empty:
        raise PipelineError(f"{config.path('labels_csv')}: none of the labelled images is in {config.path('images_dir')}")
    skipped = scarce_properties(config, labels) if config.skip_scarce_properties else {}
    for prop, why in skipped.items():
        log(f"{prop}: not trained and not filtered on: {why} (label more images to train it)")
    rules = [r for r in config.rules() if r.name not in skipped]
    properties = [r.name for r in rules]
    labelled_images = images.set_index("img_no").loc[labels[LABEL_ID], "path"].tolist()
    pixels = to_tensor(load_images(labelled_images, config.resolution, progress=True))
    dump_config(config, config.path("log_dir") / "cnn_config.json")
    fingerprint = labels_fingerprint(labels, config.property_names)
    pool = fold_pool(config.fold_workers)
    try:
        logs = train_properties(config, properties, pixels, labels, fingerprint, retrain=retrain or force, log=log,
                                pool=pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    del pixels

    unlabelled = images[~images["img_no"].isin(labels[LABEL_ID])].reset_index(drop=True)
    inference = (run_inference(config, unlabelled, force=force or retrain, log=log, properties=properties)
                 if len(unlabelled) else {})
    scores = merge_scores(images, labels, inference, config.property_names)  # a skipped one: labels only
    atomic_write_csv(scores, config.path("all_scores_csv"))

    is_labelled = scores["img_no"].isin(labels[LABEL_ID]).to_numpy()
    kept = keep_mask(scores, rules, None if config.keep_labelled else is_labelled)
    paths = images["path"].tolist()
    export_kept([p for p, k in zip(paths, kept) if k], config.path("filtered_dir"), config.link_mode, config.resolution)
    save_report_grid(scores[kept], scores[~kept], config.path("report_grid"), config.resolution, properties)

    fold_auroc, caps = {}, {}
    for prop, frame in logs.items():
        chosen = frame[frame["kept"].astype(bool)].sort_values("fold_no")
        fold_auroc[prop] = [float(v) for v in chosen["val_auroc"]]
        caps[prop] = int((~chosen["success"].astype(bool)).sum())
    candidates = np.ones(len(scores), bool) if config.keep_labelled else ~is_labelled
    by_annotator = int((labels["label_source"] == ANNOTATOR_SOURCE).sum()) if "label_source" in labels else 0
    summary = StageSummary(
        generated=len(images), labelled=len(labels), labelled_by_annotator=by_annotator, kept=int(kept.sum()),
        kept_labelled=int((kept & is_labelled).sum()), kept_predicted=int((kept & ~is_labelled).sum()),
        fold_auroc=fold_auroc, restart_caps_hit=caps, seconds=0.0,
        outputs={"scores": repo_relative(config.path("all_scores_csv")), "filtered": repo_relative(config.path("filtered_dir")),
                 "grid": repo_relative(config.path("report_grid")), "funnel": repo_relative(config.path("funnel_png"))},
        rejected_by={r.name: int((candidates & ~rule_passes(scores, r)).sum()) for r in rules},
        excluded_labelled=0 if config.keep_labelled else int(is_labelled.sum()), skipped=skipped,
        kept_audit=audit_kept_images(config, images[kept].reset_index(drop=True), log=log))
    save_funnel_plot(summary, config.path("funnel_png"))
    summary.seconds = time.perf_counter() - start
    return summary
