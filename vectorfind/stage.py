"""Stages 8-9 end to end: the phases run_vectorfind.py runs (sample, directions, evaluate, compare).

Outputs under output_dir (default vectorfind/v8/):
    samples/shard_*.npz                    w, scores, seed and index range per shard
    property_score_vectors/                the chosen direction set ({eyes|mouth|pose}_change_w_vector_{group}.csv)
    property_score_vectors_{plain|conditional}/   both sets, always oriented towards more
    svm_accuracy.csv                       per (property, group) SVM train/validation accuracy, pooled rows
    directions_info.json                   generator used, medians, orientation, kind, timings
    image_generation_report/ or final_vector_test_report/   the evaluation (see vectorfind/evaluation.py)
    leakage.csv, variant_comparison.csv, strips/strip_*.png, summary.png   (compare phase)
and medians_dir/property_scores_{sampled,mean_and_median}.csv (the grouping medians).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from common import artifacts
from common.config import config_to_dict, dump_config
from common.errors import PipelineError
from common.fileio import atomic_write_csv, atomic_write_text
from common.freshness import digest, read_record, record_text, what_differs
from common.paths import repo_relative
from vectorfind.context import (MEDIAN_COLUMNS, MEDIAN_FILE, SAMPLED_FILE, Context, cached_directions, read_medians,
                                vectors_dir, weight_scales)
from vectorfind.directions import (GROUP_NAMES, GROUP_PROPERTIES, TARGET_PROPERTIES, direction_path, save_direction,
                                   score_column)
from vectorfind.evaluation import EvaluationSettings, edit_grid, edited_image_path, evaluate, read_cases
from vectorfind.landmarks import (grade_with_landmarks, landmark_scores, load_sample_geometry,
                                  measure_sample_geometry)
from vectorfind.sampling import load_samples, sample_shards, wait_for_all
from vectorfind.settings import parse_layer_range
from vectorfind.svm import compute_medians, enable_sklearnex, fit_directions, oriented

PHASES = ("sample", "directions", "evaluate", "compare")


def median_fingerprint(ctx: Context) -> str:
    info = json.loads(ctx.fingerprint)
    info["seed"] = ctx.config.median_seed
    return record_text(info)


def run_sample(ctx: Context, force: bool = False) -> dict:
    config = ctx.config
    started = time.perf_counter()
    computed = sample_shards(ctx.generator, ctx.scorer, ctx.samples_dir, config.num_samples, config.shard_size,
                             config.seed, config.batch_size, ctx.fingerprint, ctx.device, force, ctx.rank, ctx.world,
                             ctx.progress)
    if config.median_source == "separate":
        computed += sample_shards(ctx.generator, ctx.scorer, ctx.medians_dir / "samples", config.median_samples,
                                  config.shard_size, config.median_seed, config.batch_size, median_fingerprint(ctx),
                                  ctx.device, force, ctx.rank, ctx.world, ctx.progress, desc="median sample")
    seconds = time.perf_counter() - started
    wait_for_all()
    if ctx.rank == 0:
        write_medians(ctx)
    measured, landmark_seconds = 0, 0.0
    if config.label_source == "landmarks" and ctx.rank == 0:
        started = time.perf_counter()
        measured = measure_sample_geometry(ctx.generator, ctx.samples_dir, config.num_samples, config.shard_size,
                                           config.landmark_samples, ctx.fingerprint, config.batch_size, ctx.device,
                                           force, ctx.progress, workers=config.landmark_workers)
        landmark_seconds = time.perf_counter() - started
    wait_for_all()
    return {"computed": computed, "seconds": seconds,
            "images_per_second": computed / seconds if computed and seconds > 0 else float("nan"),
            "landmark_measured": measured, "landmark_seconds": landmark_seconds}


def write_medians(ctx: Context) -> dict[str, float]:
    """Grouping medians from the sample itself or the separate run, written in the original's two files."""
    config = ctx.config
    if config.median_source == "separate":
        scores = load_samples(ctx.medians_dir / "samples", config.median_samples, config.shard_size,
                              median_fingerprint(ctx)).scores
    else:
        scores = load_samples(ctx.samples_dir, config.num_samples, config.shard_size, ctx.fingerprint).scores
    columns = {MEDIAN_COLUMNS[p]: scores[:, score_column(p)] for p in GROUP_PROPERTIES}
    sampled = pd.DataFrame({"img_no": np.arange(len(scores))} | columns)
    atomic_write_csv(sampled.round(4), ctx.medians_dir / SAMPLED_FILE, index=False)
    medians = compute_medians(scores)
    table = pd.DataFrame([{"value_type": "mean"} | {MEDIAN_COLUMNS[p]: float(columns[MEDIAN_COLUMNS[p]].mean())
                                                    for p in GROUP_PROPERTIES},
                          {"value_type": "median"} | {MEDIAN_COLUMNS[p]: medians[p] for p in GROUP_PROPERTIES}])
    atomic_write_csv(table, ctx.medians_dir / MEDIAN_FILE, index=False)
    return medians


def run_directions(ctx: Context, force: bool = False) -> dict:
    config = ctx.config
    info_path = ctx.out / artifacts.DIRECTIONS_INFO_FILE
    settings = {k: getattr(config, k) for k in ("num_samples", "seed", "median_source", "top_ratio",
                                                 "train_fraction", "split_seed", "svm_random_state",
                                                 "orientation", "direction_kind", "label_source",
                                                 "direction_method")}
    if config.label_source == "landmarks":
        settings |= {"landmark_samples": config.landmark_samples, "pose_measure": config.pose_measure}
    info = None if force else read_record(info_path, fix="delete it or re-run with --force")
    if info is not None and not what_differs(info, {"settings": settings, "fingerprint": ctx.fingerprint}):
        return info | {"skipped": True}
    started = time.perf_counter()
    samples = load_samples(ctx.samples_dir, config.num_samples, config.shard_size, ctx.fingerprint)
    medians = read_medians(ctx.medians_dir)
    accelerated = enable_sklearnex()
    w, scores, pooled = samples.w, samples.scores, False
    if config.label_source == "landmarks":
        geometry = load_sample_geometry(ctx.samples_dir, config.num_samples, config.shard_size,
                                        config.landmark_samples, ctx.fingerprint)
        scores, keep = landmark_scores(samples.scores, geometry, config.pose_measure)
        w, pooled = samples.w[keep], True
    found = fit_directions(w, scores, medians, config.top_ratio, config.train_fraction,
                           config.split_seed, config.svm_random_state, config.svm_jobs, pooled=pooled,
                           method=config.direction_method)
    for kind, vectors in (("plain", found.plain), ("conditional", found.conditional)):
        for (prop, group), vector in vectors.items():
            save_direction(direction_path(vectors_dir(ctx, kind), prop, group), vector)
    chosen = found.plain if config.direction_kind == "plain" else found.conditional
    for (prop, group), vector in chosen.items():
        save_direction(direction_path(vectors_dir(ctx), prop, group), oriented(vector, config.orientation))
    atomic_write_csv(found.accuracy, ctx.out / artifacts.SVM_ACCURACY_FILE, index=False)
    pooled = found.accuracy[found.accuracy.group == "pooled"].set_index("property").valid_accuracy
    info = {"generator": ctx.generator_description, "fingerprint": ctx.fingerprint, "settings": settings,
            "medians": medians, "sklearnex": accelerated, "seconds": time.perf_counter() - started,
            "labelled_samples": int(len(w)),
            "pooled_valid_accuracy": {p: float(pooled[p]) for p in TARGET_PROPERTIES},
            "orientation_note": ("adding a vector increases its property" if config.orientation == "more" else
                                 "the original's sign: adding a vector decreases its property")}
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    return info


def run_evaluate(ctx: Context, force: bool = False) -> dict:
    config = ctx.config
    generator = ctx.generator
    latents_csv = ctx.out / artifacts.Z_VECTORS_FILE
    cases = read_cases(latents_csv, ctx.out / artifacts.GROUP_NAMES_FILE, config.eval_cases, config.eval_seed,
                       generator.z_space_dim, generator.label_size)
    report_dir = ctx.out / (artifacts.SELECTED_EVALUATION_DIR if cases.source != "random" else artifacts.EVALUATION_DIR)
    directions_of = cached_directions(vectors_dir(ctx))
    for group in GROUP_NAMES:
        directions_of(group)  # a missing vectors file fails here, before any image is made
    w = None
    if config.edit_unit == "sd":
        w = load_samples(ctx.samples_dir, config.num_samples, config.shard_size, ctx.fingerprint).w
    settings = EvaluationSettings(config.thresholds, parse_layer_range(config.edit_layers), config.eval_batch_size,
                                  config.save_images, config.png_check_cases, config.stop_after_passes)
    directions = digest(*(directions_of(g)[p] for g in GROUP_NAMES for p in TARGET_PROPERTIES), algorithm="sha1",
                        length=None)
    fingerprint = record_text({"directions": directions, "run": ctx.fingerprint} | {k: getattr(config, k) for k in (
        "edit_layers", "edit_unit", "edit_scale", "eyes_edit_scale", "mouth_edit_scale", "pose_edit_scale",
        "eval_seed", "eval_cases", "eyes_threshold", "mouth_threshold", "pose_threshold")})
    summary = evaluate(generator, ctx.scorer, directions_of, read_medians(ctx.medians_dir), cases, report_dir,
                       settings, weight_scales(ctx, directions_of, w), fingerprint, force, ctx.device, ctx.progress)
    if config.landmark_cases > 0 and config.save_images:
        evaluated = pd.read_csv(report_dir / artifacts.TEST_RESULT_FILE)["case"].astype(int).tolist()
        summary["landmark_grading"] = grade_with_landmarks(
            report_dir, edit_grid(), evaluated, config.landmark_cases, config.eval_seed, config.pose_measure,
            lambda case, k: edited_image_path(report_dir, case, k), ctx.progress, workers=config.landmark_workers)
        atomic_write_text(report_dir / artifacts.EVALUATION_SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary | {"report_dir": repo_relative(report_dir)}


def run_phases(ctx: Context, phases, force: bool = False) -> dict:
    """Run the named phases in order (sampling on every process, the rest on rank 0); returns their summaries."""
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise PipelineError(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)} or all")
    ctx.out.mkdir(parents=True, exist_ok=True)
    if ctx.rank == 0:
        dump_config(ctx.config, ctx.out / "vectorfind_config.json")
    results: dict = {"generator": ctx.generator_description}
    for phase in PHASES:
        if phase not in phases:
            continue
        if phase != "sample" and ctx.rank != 0:
            continue
        started = time.perf_counter()
        if phase == "sample":
            results[phase] = run_sample(ctx, force)
        elif phase == "directions":
            results[phase] = run_directions(ctx, force)
        elif phase == "evaluate":
            results[phase] = run_evaluate(ctx, force)
        else:
            from vectorfind.compare import run_compare

            results[phase] = run_compare(ctx, force)
        results[phase]["phase_seconds"] = time.perf_counter() - started
    if ctx.rank == 0:
        summary_path = ctx.out / "vectorfind_summary.json"
        previous = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        merged = previous | results | {"config": config_to_dict(ctx.config)}
        atomic_write_text(summary_path, json.dumps(merged, indent=2, default=str) + "\n")
    return results
