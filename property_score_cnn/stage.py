"""Stage 5: train the property-score CNNs on stage 4's scores, write their predictions, merge them.

    seven:     segmentation/property_score_results/all_scores_v2.csv + the generator's images it lists
               ({images_dir}/{img_no:06d}.png, not the 224 face crops) -> the 7-output CNN,
               train_log_v2_cnn.csv, all_scores_v2_cnn.csv, compare/all_scores_v2_vs_cnn.csv, a scatter PNG
    hairstyle: all_scores_ohlora_v3.csv of the v8 dataset if it exists, else stage 4's hairstyle scores of
               the stage-1 filtered set -> the hairstyle CNN, its train log and scatter PNG (the config is the
               named run `hairstyle`: scores_csv, else fallback_scores_csv)
    merged:    the two model files -> the 8-output CNN (no training), checked to reproduce both exactly

Re-runs reuse a trained model unless retrain/force is asked for (a model trained on other scores or
settings is refused with a request for --retrain; a file without our info sidecar, e.g. the original's
256 px weights, is used as given). Outputs are written atomically; a killed training starts again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common import artifacts
from common.checkpoints import save_weights
from common.config import dump_config
from common.devices import torch_threads
from common.errors import PipelineError, log_line
from common.paths import repo_relative
from common.training_loop import seeded_split
from property_score_cnn.config import MODEL_CHOICES, PropertyCnnConfig
from property_score_cnn.dataset import load_dataset
from property_score_cnn.models import SEVEN_NAMES, merge_models
from property_score_cnn.outputs import save_scatter, write_predictions
from property_score_cnn.scoring import load_property_cnn, score_images
from property_score_cnn.train_or_reuse import train_or_reuse
from property_score_cnn.training import pearson_r

HAIRSTYLE_NAMES = ("hairstyle",)
# Early stopping of the 7-output CNN leaves out background_std (section 5a).
SEVEN_CRITERION_NAMES = tuple(n for n in SEVEN_NAMES if n != "background_std")
SEVEN_LOG = artifacts.SEVEN_CNN_LOG
HAIRSTYLE_LOG = artifacts.HAIRSTYLE_CNN_LOG


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


def run_regression_model(config: PropertyCnnConfig, kind: str, retrain: bool = False, force: bool = False,
                         log=log_line) -> ModelOutcome:
    """Train (or reuse) the 7-output or the hairstyle CNN and write its outputs."""
    start = time.perf_counter()
    with torch_threads(config.num_threads):
        if kind == "seven":
            names, criterion_names, log_name, algorithm = SEVEN_NAMES, SEVEN_CRITERION_NAMES, SEVEN_LOG, "v2"
        else:
            names, criterion_names, log_name, algorithm = HAIRSTYLE_NAMES, HAIRSTYLE_NAMES, HAIRSTYLE_LOG, "hairstyle"
        dataset = load_dataset(*config.source(), names, config.resolution,
                               f"compute_property_scores.py --algorithm {algorithm}")
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


def run_merge(config: PropertyCnnConfig, hairstyle_config: PropertyCnnConfig, log=log_line) -> ModelOutcome:
    """Combine the 7-output and hairstyle files into the 8-output model (no training): `config` is the seven run's
    (the merged file goes beside its model), `hairstyle_config` the hairstyle run's. Widths are read from the files."""
    start = time.perf_counter()
    seven_path, hairstyle_path = config.model_path("seven"), hairstyle_config.model_path("hairstyle")
    seven = load_property_cnn(seven_path, config.resolution)
    hairstyle = load_property_cnn(hairstyle_path, config.resolution)
    if type(seven).__name__ != "PropertyScoreCNN" or type(hairstyle).__name__ != "HairstyleScoreCNN":
        raise PipelineError(f"{seven_path} must hold the 7-output CNN and {hairstyle_path} the hairstyle CNN; "
                            f"re-run --model seven / hairstyle")
    merged = merge_models(seven, hairstyle)
    check_merged(merged, seven, hairstyle, seed=config.seed)
    path = config.model_path("merged")
    save_weights(path, merged.state_dict(), skip_identical=True)  # same bytes on a re-run: VectorFind fingerprints them
    log(f"merged: outputs {', '.join(merged.output_names)}; identical to both models on 8 test images")
    return ModelOutcome("merged", path, False, {}, None, None, time.perf_counter() - start,
                        {"model": repo_relative(path)}, 0)


def plan(config: PropertyCnnConfig, kind: str, hairstyle_config: PropertyCnnConfig | None = None) -> list[str]:
    if kind == "merged":
        return [f"merge {config.model_path('seven')} + {(hairstyle_config or config).model_path('hairstyle')} -> "
                f"{config.model_path('merged')}"]
    source, images = config.source()
    state = "exists, reused unless --retrain" if config.model_path(kind).is_file() else "to train"
    return [f"scores: {source}" + ("" if source.is_file() else " (missing)"),
            f"images: {images} ({config.resolution}x{config.resolution})",
            f"model: {config.model_path(kind)} ({state}); width x{config.width_multiplier}, <= {config.max_epochs} "
            f"epochs, patience {config.patience}, "
            f"{1 - config.val_fraction:.0%}/{config.val_fraction:.0%} split seed {config.seed}"]


def run_property_cnn_stage(config: PropertyCnnConfig, kind: str, retrain: bool = False, force: bool = False,
                           log=log_line, hairstyle_config: PropertyCnnConfig | None = None) -> ModelOutcome:
    """`config`: the run of `kind` (seven: [property_cnn]; hairstyle: the named run `hairstyle`, MODEL_STAGES);
    merged reads the seven run's model and the hairstyle run's (`hairstyle_config`, default `config`)."""
    if kind not in MODEL_CHOICES:
        raise PipelineError(f"--model must be one of {', '.join(MODEL_CHOICES)}, got '{kind}'")
    if kind == "merged":
        return run_merge(config, hairstyle_config or config, log)
    return run_regression_model(config, kind, retrain, force, log)
