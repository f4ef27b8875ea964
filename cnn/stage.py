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

import time

import numpy as np
import pandas as pd

from cnn.audit import audit_kept_images
from cnn.config import CnnConfig
from cnn.fold_training import train_on_labelled
from cnn.images import list_generated_images
from cnn.inference import merge_scores, run_inference
from cnn.keep import export_kept, keep_mask, rule_passes
from cnn.labels import ANNOTATOR_SOURCE, LABEL_ID, generated_labels, obtain_labels, scarce_properties
from cnn.plots import save_funnel_plot, save_report_grid
from cnn.summary import StageSummary
from cnn.properties import PropertyRule
from common.devices import torch_threads
from common.errors import log_line
from common.fileio import atomic_write_csv
from common.paths import repo_relative


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


def run_filter_stage(config: CnnConfig, retrain: bool = False, force: bool = False, log=log_line) -> StageSummary:
    """The whole stage; torch's thread count is set from the config for its duration only."""
    with torch_threads(config.num_threads):
        return _run_filter_stage(config, retrain, force, log)


def _run_filter_stage(config: CnnConfig, retrain: bool, force: bool, log) -> StageSummary:
    start = time.perf_counter()
    images = list_generated_images(config.path("images_dir"))
    labels = generated_labels(config, obtain_labels(config, images, force, log=log), images, log)
    skipped = scarce_properties(config, labels) if config.skip_scarce_properties else {}
    for prop, why in skipped.items():
        log(f"{prop}: not trained and not filtered on: {why} (label more images to train it)")
    rules = [r for r in config.rules() if r.name not in skipped]
    properties = [r.name for r in rules]
    logs = train_on_labelled(config, properties, images, labels, retrain or force, log)

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

    audit = audit_kept_images(config, images[kept].reset_index(drop=True), log=log)
    summary = summarise(config, images, labels, logs, scores, rules, kept, skipped, audit)
    save_funnel_plot(summary, config.path("funnel_png"))
    summary.seconds = time.perf_counter() - start
    return summary


def summarise(config: CnnConfig, images: pd.DataFrame, labels: pd.DataFrame, logs: dict[str, pd.DataFrame],
              scores: pd.DataFrame, rules: list[PropertyRule], kept: np.ndarray, skipped: dict[str, str],
              audit: dict[str, float]) -> StageSummary:
    """The funnel and the folds' validation AUROCs of a finished stage (seconds filled in by the caller)."""
    is_labelled = scores["img_no"].isin(labels[LABEL_ID]).to_numpy()
    fold_auroc, caps = {}, {}
    for prop, frame in logs.items():
        chosen = frame[frame["kept"].astype(bool)].sort_values("fold_no")
        fold_auroc[prop] = [float(v) for v in chosen["val_auroc"]]
        caps[prop] = int((~chosen["success"].astype(bool)).sum())
    candidates = np.ones(len(scores), bool) if config.keep_labelled else ~is_labelled
    by_annotator = int((labels["label_source"] == ANNOTATOR_SOURCE).sum()) if "label_source" in labels else 0
    return StageSummary(
        generated=len(images), labelled=len(labels), labelled_by_annotator=by_annotator, kept=int(kept.sum()),
        kept_labelled=int((kept & is_labelled).sum()), kept_predicted=int((kept & ~is_labelled).sum()),
        fold_auroc=fold_auroc, restart_caps_hit=caps, seconds=0.0,
        outputs={"scores": repo_relative(config.path("all_scores_csv")), "filtered": repo_relative(config.path("filtered_dir")),
                 "grid": repo_relative(config.path("report_grid")), "funnel": repo_relative(config.path("funnel_png"))},
        rejected_by={r.name: int((candidates & ~rule_passes(scores, r)).sum()) for r in rules},
        excluded_labelled=0 if config.keep_labelled else int(is_labelled.sum()), skipped=skipped, kept_audit=audit)
