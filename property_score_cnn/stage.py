"""Stage 5: train the property-score CNNs on stage 4's scores, write their predictions, merge them.

    seven:     segmentation/property_score_results/all_scores_v2.csv + the generator's images it lists
               ({images_dir}/{img_no:06d}.png, not the 224 face crops) -> the 7-output CNN,
               train_log_v2_cnn.csv, all_scores_v2_cnn.csv, compare/all_scores_v2_vs_cnn.csv, a scatter PNG
    hairstyle: all_scores_ohlora_v3.csv of the v8 dataset if it exists, else stage 4's hairstyle scores of
               the stage-1 filtered set -> the hairstyle CNN, its train log and scatter PNG
    merged:    the two model files -> the 8-output CNN (no training), checked to reproduce both exactly

Re-runs reuse a trained model unless retrain/force is asked for (a model trained on other scores or
settings is refused with a request for --retrain; a file without our info sidecar, e.g. the original's
256 px weights, is used as given). Outputs are written atomically; a killed training starts again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from common.checkpoints import save_weights
from common.config import dump_config
from common.devices import DEVICE_HELP, check_device_name, choose_device
from common.paths import repo_relative, resolve_repo_path
from common.errors import PipelineError, log_line
from common.fileio import atomic_path, atomic_write_csv, atomic_write_text, read_csv_checked
from common.fileio import load_images as load_rgb_images
from common.training_loop import LoopSettings, seeded_split
from property_score_cnn.models import SEVEN_NAMES, SUPPORTED_RESOLUTIONS, build_model, merge_models
from property_score_cnn.scoring import load_property_cnn, score_images
from property_score_cnn.training import TrainedCnn, pearson_r, train_regression_cnn

MODEL_CHOICES = ("seven", "hairstyle", "merged")
HAIRSTYLE_NAMES = ("hairstyle",)
# Early stopping of the 7-output CNN leaves out background_std (section 5a).
SEVEN_CRITERION_NAMES = tuple(n for n in SEVEN_NAMES if n != "background_std")
SEVEN_LOG = "train_log_v2_cnn.csv"
HAIRSTYLE_LOG = "property_score_cnn_train_log.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class PropertyCnnConfig:
    """Section [property_cnn] of a profile."""

    profile: str = "embedded"
    resolution: int = field(default=64, metadata={"help": "image size of the generator's images (64, 128, 256)"})
    scores_csv: str = field(default="segmentation/property_score_results/all_scores_v2.csv", metadata={
        "help": "stage 4's v2 scores (img_no + the 7 *_score columns) the 7-output CNN learns"})
    images_dir: str = field(default="stylegan/synthesize_results_filtered", metadata={
        "help": "folder of the generator's images {img_no:06d}.png|jpg listed by scores_csv"})
    hairstyle_scores_csv: str = field(default="segmentation/property_score_results_v8/all_scores_ohlora_v3.csv",
                                      metadata={"help": "hairstyle scores of the v8 dataset (used if present)"})
    hairstyle_images_dir: str = "stylegan/generated_face_images_filtered"
    fallback_hairstyle_scores_csv: str = field(
        default="segmentation/property_score_results/all_scores_ohlora_v3.csv",
        metadata={"help": "hairstyle scores used when hairstyle_scores_csv does not exist (stage-1 filtered set)"})
    fallback_hairstyle_images_dir: str = "stylegan/synthesize_results_filtered"
    models_dir: str = "property_score_cnn/models"
    seven_model: str = field(default="stylegan_gen_fine_tuned_v2_cnn.pth", metadata={
        "help": "7-output CNN file in models_dir (the original's name)"})
    hairstyle_model: str = "ohlora_v3_hairstyle_property_cnn.pth"
    merged_model: str = "ohlora_v3_merged_property_cnn.pth"
    log_dir: str = "property_score_cnn/train_logs"
    predictions_csv: str = "segmentation/property_score_results/all_scores_v2_cnn.csv"
    compare_csv: str = "segmentation/property_score_results/compare/all_scores_v2_vs_cnn.csv"
    seed: int = field(default=0, metadata={"help": "seeds the 90/10 split, initialisation and batch order"})
    val_fraction: float = 0.1
    width_multiplier: float = field(default=1.0, metadata={"help": "scales every conv's channels (7-output CNN)"})
    learning_rate: float = 5e-5
    train_batch_size: int = 16
    eval_batch_size: int = 64
    max_epochs: int = field(default=1000, metadata={"help": "epoch cap (the original had none)"})
    patience: int = field(default=20, metadata={"help": "early stopping: epochs without a better criterion"})
    cosine_t_max: int = 10
    hairstyle_width_multiplier: float = 1.0
    hairstyle_learning_rate: float = 5e-5
    hairstyle_max_epochs: int = 1000
    hairstyle_patience: int = 45
    hairstyle_lr_gamma: float = field(default=0.95, metadata={"help": "ExponentialLR factor per epoch"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})

    def validate(self) -> None:
        check_device_name(self.device, "[property_cnn] device")
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise PipelineError(f"[property_cnn] resolution must be one of "
                                f"{', '.join(map(str, SUPPORTED_RESOLUTIONS))}, got {self.resolution}")
        for name in ("train_batch_size", "eval_batch_size", "max_epochs", "patience", "cosine_t_max",
                     "hairstyle_max_epochs", "hairstyle_patience"):
            if getattr(self, name) < 1:
                raise PipelineError(f"[property_cnn] {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise PipelineError(f"[property_cnn] val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("width_multiplier", "learning_rate", "hairstyle_width_multiplier", "hairstyle_learning_rate",
                     "hairstyle_lr_gamma"):
            if getattr(self, name) <= 0:
                raise PipelineError(f"[property_cnn] {name} must be > 0, got {getattr(self, name)}")

    def path(self, name: str) -> Path:
        return resolve_repo_path(getattr(self, name))

    def model_path(self, kind: str) -> Path:
        return self.path("models_dir") / getattr(self, f"{kind}_model")

    def loop_settings(self, kind: str) -> LoopSettings:
        prefix = "hairstyle_" if kind == "hairstyle" else ""
        return LoopSettings(learning_rate=getattr(self, f"{prefix}learning_rate"),
                            train_batch_size=self.train_batch_size, eval_batch_size=self.eval_batch_size,
                            max_epochs=getattr(self, f"{prefix}max_epochs"), patience=getattr(self, f"{prefix}patience"),
                            seed=self.seed, device=str(choose_device(self.device)))


# ----------------------------------------------------------------------------------------------
# Inputs



def read_scores_csv(path: Path, names: tuple[str, ...], producer: str) -> pd.DataFrame:
    """img_no and the `{name}_score` columns of a stage-4 CSV, checked; any problem is one line."""
    if not path.is_file():
        raise PipelineError(f"{path}: scores file not found; run {producer} first (or pass the file's path)")
    frame = read_csv_checked(path, f"re-run {producer}")
    columns = ["img_no", *(f"{n}_score" for n in names)]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)} "
                            f"(re-run {producer})")
    if frame.empty:
        raise PipelineError(f"{path}: no rows; re-run {producer} on a non-empty image set")
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if column == "img_no" and not bad.any():
            bad |= (values != values.round()).to_numpy() | (values < 0).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PipelineError(f"{path}: row {row + 2} has {column} = '{frame[column].iloc[row]}'; expected "
                                + ("a non-negative image number" if column == "img_no" else "a finite number")
                                + f" (re-run {producer})")
        frame[column] = values.astype(int) if column == "img_no" else values.astype(np.float64)
    if frame["img_no"].duplicated().any():
        img_no = int(frame.loc[frame["img_no"].duplicated(), "img_no"].iloc[0])
        raise PipelineError(f"{path}: img_no {img_no} appears more than once; re-run {producer}")
    return frame[columns].reset_index(drop=True)


def find_images(img_nos: np.ndarray, images_dir: Path, scores_csv: Path) -> list[Path]:
    """The generator's image for each img_no (the scores CSV's img_path names the 224 crops instead)."""
    if not images_dir.is_dir():
        raise PipelineError(f"{images_dir}: image folder not found; it must hold the images {scores_csv} lists "
                            f"(run stages 1-2, or pass --images-dir)")
    present = {entry.name for entry in os.scandir(images_dir)}
    paths, missing = [], []
    for img_no in img_nos:
        name = next((f"{img_no:06d}{s}" for s in IMAGE_SUFFIXES if f"{img_no:06d}{s}" in present), None)
        if name is None:
            missing.append(f"{img_no:06d}.png")
        else:
            paths.append(images_dir / name)
    if missing:
        raise PipelineError(f"{images_dir}: {len(missing)} image(s) listed in {scores_csv} are missing "
                            f"(first: {missing[0]}); pass the --images-dir they were generated in, "
                            f"or re-run stages 3-4 on this folder")
    return paths


def load_images(paths: list[Path], resolution: int, progress: bool = True) -> torch.Tensor:
    """[N, 3, R, R] uint8; every file checked (size, mode, not truncated) by common.fileio.load_images."""
    return torch.from_numpy(load_rgb_images(paths, resolution, progress)).permute(0, 3, 1, 2).contiguous()


@dataclass
class Dataset:
    scores: pd.DataFrame
    paths: list[Path]
    images: torch.Tensor
    targets: torch.Tensor
    source: Path


def load_dataset(scores_csv: Path, images_dir: Path, names: tuple[str, ...], resolution: int, producer: str
                 ) -> Dataset:
    scores = read_scores_csv(scores_csv, names, producer)
    paths = find_images(scores["img_no"].to_numpy(), images_dir, scores_csv)
    images = load_images(paths, resolution)
    targets = torch.tensor(scores[[f"{n}_score" for n in names]].to_numpy(np.float32))
    return Dataset(scores, paths, images, targets, scores_csv)


def hairstyle_source(config: PropertyCnnConfig) -> tuple[Path, Path]:
    """(scores CSV, images folder): the v8 dataset's when its scores exist, else the stage-1 filtered set's."""
    primary = config.path("hairstyle_scores_csv")
    if primary.is_file():
        return primary, config.path("hairstyle_images_dir")
    return config.path("fallback_hairstyle_scores_csv"), config.path("fallback_hairstyle_images_dir")


# ----------------------------------------------------------------------------------------------
# Training with reuse


def _fingerprint(dataset: Dataset, names: tuple[str, ...]) -> str:
    text = dataset.scores[["img_no", *(f"{n}_score" for n in names)]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _info_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".info.json")


def _model_info(config: PropertyCnnConfig, kind: str, fingerprint: str) -> dict:
    width = config.hairstyle_width_multiplier if kind == "hairstyle" else config.width_multiplier
    schedule = ({"lr_gamma": config.hairstyle_lr_gamma} if kind == "hairstyle"
                else {"cosine_t_max": config.cosine_t_max})
    return dict(kind=kind, resolution=config.resolution, width_multiplier=width, seed=config.seed,
                val_fraction=config.val_fraction, scores_sha256=fingerprint,
                settings={k: v for k, v in dataclasses.asdict(config.loop_settings(kind)).items()
                          if k != "device"},  # the same model on any device
                **schedule)


def _check_reusable(config: PropertyCnnConfig, kind: str, fingerprint: str, log) -> bool:
    """True when the stored model may be reused; a model of other data or settings needs --retrain."""
    path = config.model_path(kind)
    if not path.is_file():
        return False
    info_path = _info_path(path)
    if not info_path.is_file():
        log(f"{kind}: using {repo_relative(path)} as given (no {info_path.name}; pass --retrain to train anew)")
        return True
    try:
        stored = json.loads(info_path.read_text())
    except json.JSONDecodeError:
        raise PipelineError(f"{info_path}: not valid JSON; re-run with --retrain") from None
    current = _model_info(config, kind, fingerprint)
    changed = [k for k in current if stored.get(k) != current[k]]
    if changed:
        raise PipelineError(f"{path}: trained with other {', '.join(changed)} than now "
                            f"(e.g. {changed[0]} = {stored.get(changed[0])!r}, now {current[changed[0]]!r}); "
                            f"re-run with --retrain")
    return True


def _rounded(row: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}


def _train(config: PropertyCnnConfig, kind: str, dataset: Dataset, names: tuple[str, ...],
           criterion_names: tuple[str, ...], log_path: Path) -> TrainedCnn:
    settings = config.loop_settings(kind)
    if kind == "hairstyle":
        def make_scheduler(optimizer):
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.hairstyle_lr_gamma)
        width = config.hairstyle_width_multiplier
    else:
        def make_scheduler(optimizer):
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.cosine_t_max, eta_min=0.0)
        width = config.width_multiplier
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
        return train_regression_cnn(lambda: build_model(kind, config.resolution, width), dataset.images,
                                    dataset.targets, names, criterion_names, settings, config.val_fraction,
                                    make_scheduler=make_scheduler, on_epoch=on_epoch)
    finally:
        bar.close()


@dataclass
class ModelOutcome:
    kind: str
    model_path: Path
    trained: bool
    val_r: dict[str, float]
    best_epoch: int | None
    total_epochs: int | None
    seconds: float
    outputs: dict[str, str]
    num_images: int


def train_or_reuse(config: PropertyCnnConfig, kind: str, dataset: Dataset, names: tuple[str, ...],
                   criterion_names: tuple[str, ...], log_name: str, retrain: bool, log):
    """(model in eval mode, trained?, best epoch, total epochs)."""
    fingerprint = _fingerprint(dataset, names)
    path = config.model_path(kind)
    if not retrain and _check_reusable(config, kind, fingerprint, log):
        return load_property_cnn(path, config.resolution), False, None, None
    # A killed retraining must not leave the old model to be reused as if it were the new one.
    _info_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    log_path = config.path("log_dir") / log_name
    trained = _train(config, kind, dataset, names, criterion_names, log_path)
    save_weights(path, trained.result.best_state)
    info = {**_model_info(config, kind, fingerprint), "best_epoch": trained.result.best_epoch,
            "total_epochs": trained.result.total_epochs, "best_criterion": trained.result.best_criterion,
            "elapsed_time": round(trained.result.elapsed_time, 2), "scores_csv": repo_relative(dataset.source)}
    atomic_write_text(_info_path(path), json.dumps(info, indent=2, sort_keys=True) + "\n")
    return trained.result.model, True, trained.result.best_epoch, trained.result.total_epochs


# ----------------------------------------------------------------------------------------------
# Outputs


def save_scatter(predicted: np.ndarray, target: np.ndarray, names: tuple[str, ...], path: Path, title: str) -> None:
    """Predicted vs target per property on the validation split, r in each panel's title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.axis("off")
            continue
        x, y = target[:, k], predicted[:, k]
        ax.scatter(x, y, s=6, alpha=0.5, linewidths=0)
        low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set_title(f"{names[k]}: r = {pearson_r(y, x):.3f}", fontsize=9)
        ax.set_xlabel("target (z-score)", fontsize=8)
        ax.set_ylabel("CNN", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_predictions(config: PropertyCnnConfig, dataset: Dataset, predicted: np.ndarray, val_idx: np.ndarray
                      ) -> dict[str, str]:
    """all_scores_v2_cnn.csv (img_no, img_path, 7 scores) and compare/all_scores_v2_vs_cnn.csv."""
    img_paths = [repo_relative(p) for p in dataset.paths]
    predictions = pd.DataFrame({"img_no": dataset.scores["img_no"].to_numpy(), "img_path": img_paths})
    compare = predictions.copy()
    split = np.full(len(predictions), "train", dtype=object)
    split[val_idx] = "valid"
    for k, name in enumerate(SEVEN_NAMES):
        column = f"{name}_score"
        predictions[column] = np.round(predicted[:, k], 4)
        compare[f"{column}_v2"] = dataset.scores[column].to_numpy()
        compare[f"{column}_v2_cnn"] = predictions[column]
        compare[f"{column}_diff"] = np.round(np.abs(compare[f"{column}_v2"] - compare[f"{column}_v2_cnn"]), 4)
    compare["split"] = split
    atomic_write_csv(predictions, config.path("predictions_csv"), index=False)
    atomic_write_csv(compare, config.path("compare_csv"), index=False)
    return {"predictions": repo_relative(config.path("predictions_csv")),
            "compare": repo_relative(config.path("compare_csv"))}


def _threads(config: PropertyCnnConfig):
    previous = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    return previous


def run_regression_model(config: PropertyCnnConfig, kind: str, retrain: bool = False, force: bool = False,
                         log=log_line) -> ModelOutcome:
    """Train (or reuse) the 7-output or the hairstyle CNN and write its outputs."""
    start = time.perf_counter()
    previous_threads = _threads(config)
    try:
        if kind == "seven":
            names, criterion_names, log_name = SEVEN_NAMES, SEVEN_CRITERION_NAMES, SEVEN_LOG
            dataset = load_dataset(config.path("scores_csv"), config.path("images_dir"), names, config.resolution,
                                   "compute_property_scores.py --algorithm v2")
        else:
            names, criterion_names, log_name = HAIRSTYLE_NAMES, HAIRSTYLE_NAMES, HAIRSTYLE_LOG
            scores_csv, images_dir = hairstyle_source(config)
            dataset = load_dataset(scores_csv, images_dir, names, config.resolution,
                                   "compute_property_scores.py --algorithm hairstyle")
        log(f"{kind}: {len(dataset.paths)} images from {repo_relative(dataset.source)}")
        dump_config(config, config.path("log_dir") / "property_cnn_config.json")
        model, trained, best_epoch, total_epochs = train_or_reuse(config, kind, dataset, names, criterion_names,
                                                                  log_name, retrain or force, log)
        predicted = score_images(model, dataset.images, batch_size=config.eval_batch_size,
                                 device=config.device).numpy()
        _, val_idx = seeded_split(len(dataset.paths), config.val_fraction, config.seed)  # the training split
        target = dataset.targets.numpy()
        val_r = {n: pearson_r(predicted[val_idx, k], target[val_idx, k]) for k, n in enumerate(names)}
        scatter = config.path("log_dir") / ("val_scatter_v2_cnn.png" if kind == "seven" else
                                            "val_scatter_hairstyle_cnn.png")
        save_scatter(predicted[val_idx], target[val_idx], names, scatter,
                     f"{kind} CNN, validation split ({len(val_idx)} images, seed {config.seed})")
        outputs = {"model": repo_relative(config.model_path(kind)), "scatter": repo_relative(scatter)}
        if trained:
            outputs["log"] = repo_relative(config.path("log_dir") / log_name)
        if kind == "seven":
            outputs.update(write_predictions(config, dataset, predicted, val_idx))
    finally:
        torch.set_num_threads(previous_threads)
    return ModelOutcome(kind, config.model_path(kind), trained, val_r, best_epoch, total_epochs,
                        time.perf_counter() - start, outputs, len(dataset.paths))


def check_merged(merged, seven, hairstyle, num_images: int = 8, seed: int = 0) -> None:
    """The merged model must give both models' outputs bit for bit (checked on seeded random images)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, 3, merged.resolution, merged.resolution), dtype=torch.uint8,
                           generator=generator)
    device = "cpu"
    both = torch.cat([score_images(seven, images, device=device), score_images(hairstyle, images, device=device)], 1)
    if not torch.equal(score_images(merged, images, device=device), both):
        raise PipelineError("merged property CNN does not reproduce the two models' outputs; this is a bug, "
                            "please report it")


def run_merge(config: PropertyCnnConfig, log=log_line) -> ModelOutcome:
    """Combine the 7-output and hairstyle files into the 8-output model (no training)."""
    start = time.perf_counter()
    seven = load_property_cnn(config.model_path("seven"), config.resolution)
    hairstyle = load_property_cnn(config.model_path("hairstyle"), config.resolution)
    if type(seven).__name__ != "PropertyScoreCNN" or type(hairstyle).__name__ != "HairstyleScoreCNN":
        raise PipelineError(f"{config.model_path('seven')} must hold the 7-output CNN and "
                            f"{config.model_path('hairstyle')} the hairstyle CNN; re-run --model seven / hairstyle")
    merged = merge_models(seven, hairstyle)
    check_merged(merged, seven, hairstyle, seed=config.seed)
    path = config.model_path("merged")
    save_weights(path, merged.state_dict(), skip_identical=True)  # same bytes on a re-run: VectorFind fingerprints them
    log(f"merged: outputs {', '.join(merged.output_names)}; identical to both models on 8 test images")
    return ModelOutcome("merged", path, False, {}, None, None, time.perf_counter() - start,
                        {"model": repo_relative(path)}, 0)


def plan(config: PropertyCnnConfig, kind: str) -> list[str]:
    if kind == "merged":
        return [f"merge {config.model_path('seven')} + {config.model_path('hairstyle')} -> "
                f"{config.model_path('merged')}"]
    if kind == "seven":
        source, images = config.path("scores_csv"), config.path("images_dir")
        width, epochs, patience = config.width_multiplier, config.max_epochs, config.patience
    else:
        source, images = hairstyle_source(config)
        width, epochs, patience = config.hairstyle_width_multiplier, config.hairstyle_max_epochs, config.hairstyle_patience
    state = "exists, reused unless --retrain" if config.model_path(kind).is_file() else "to train"
    return [f"scores: {source}" + ("" if source.is_file() else " (missing)"),
            f"images: {images} ({config.resolution}x{config.resolution})",
            f"model: {config.model_path(kind)} ({state}); width x{width}, <= {epochs} epochs, patience {patience}, "
            f"{1 - config.val_fraction:.0%}/{config.val_fraction:.0%} split seed {config.seed}"]


def run_property_cnn_stage(config: PropertyCnnConfig, kind: str, retrain: bool = False, force: bool = False,
                           log=log_line) -> ModelOutcome:
    if kind not in MODEL_CHOICES:
        raise PipelineError(f"--model must be one of {', '.join(MODEL_CHOICES)}, got '{kind}'")
    if kind == "merged":
        return run_merge(config, log)
    return run_regression_model(config, kind, retrain, force, log)
