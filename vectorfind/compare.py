"""Beyond the original's metrics: leakage and drift of plain vs conditional directions, all layers vs a range.

Each variant runs the evaluation protocol on the first `compare_cases` cases (compare/{kind}_{layers}/). From every
case's 50 edited images, least squares of each score and each pixel on the grid weights (eyes, mouth, pose,
intercept) gives the change per unit edit of each property:
    self effect   d score_p / d weight_p, in SD of the population's score p (higher = stronger edit)
    leakage       |d score_q / d weight_p| for the other 7 scores q, in SD of their population (lower = cleaner);
                  also divided by the self effect (leakage_per_self), the fair comparison of all layers vs a range
    drift         mean |d pixel / d weight_p| (uint8 levels) outside the property's crop box for eyes and mouth
                  (the property CNN's eyes / mouth windows), over the whole image for pose
    lighting      |d mean grey level / d weight_p| of the face region (brightness_levels) and the length of the
                  change of its mean colour, (R - G, B - G) per unit edit (colour_levels): an edit that only
                  relights the face shows here, however well the scores follow it
    landmarks     with label_source = landmarks, the same 50 images re-measured by the landmark model:
                  d measure_p / d weight_p in SD of the labelled samples' measure (landmark_self_sd), and drift
                  and brightness per SD of that (drift_per_landmark_sd, brightness_per_landmark_sd): the edit's
                  specificity by the geometry it is meant to move, not by a CNN that may read eyes poorly
Also: a strip per property (one face, weights -2..+2 in the evaluation's units) and summary.png.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from common import artifacts
from common.fileio import atomic_write_csv, atomic_write_text, save_image
from common.freshness import read_record, record_text, what_differs
from common.images import make_grid
from vectorfind.context import cached_directions, read_medians, vectors_dir, weight_scales
from vectorfind.directions import SCORE_NAMES, TARGET_PROPERTIES, edit_w, group_name, score_column
from vectorfind.evaluation import Cases, EvaluationSettings, evaluate
from vectorfind.landmarks import GEOMETRY_COLUMNS, load_sample_geometry, measuring, target_measures
from vectorfind.sampling import codes_to_w, load_samples, render, sample_codes, score
from vectorfind.settings import parse_layer_range

BOXED = ("eyes", "mouth")   # properties whose drift is measured outside their crop box
# The face region of the lighting columns, as fractions of the image (rows, cols): the central face of an
# aligned generated portrait, without hair and background.
FACE_REGION = ((0.3, 0.9), (0.25, 0.75))


def outside_mask(prop: str, resolution: int) -> np.ndarray:
    """Pixels outside the property CNN's crop for eyes and mouth (every pixel for pose)."""
    from property_score_cnn.models import CROPS_256, SUPPORTED_RESOLUTIONS, crop_window

    mask = np.ones((resolution, resolution), bool)
    if prop in BOXED:
        if resolution in SUPPORTED_RESOLUTIONS:
            r0, r1, c0, c1 = crop_window(prop, resolution)
        else:
            r0, r1, c0, c1 = (int(v * resolution / 256) for v in CROPS_256[prop])
        mask[r0:r1, c0:c1] = False
    return mask


def face_region(resolution: int) -> tuple[slice, slice]:
    (r0, r1), (c0, c1) = FACE_REGION
    return (slice(int(r0 * resolution), int(r1 * resolution)), slice(int(c0 * resolution), int(c1 * resolution)))


class EffectCollector:
    """Per case: slopes of the 8 scores and of every pixel on the three grid weights; with a landmark model
    (`geometry.measure(images) -> [N, 4]` in GEOMETRY_COLUMNS order) also the slope of each target property's
    landmark measure on its own weight."""

    def __init__(self, resolution: int, geometry=None, pose_measure: str = "yaw"):
        self.score_slopes: list[np.ndarray] = []   # [3, 8] per case
        self.drift: list[np.ndarray] = []          # [3] per case
        self.lighting: list[np.ndarray] = []       # [3, 2] per case: brightness, colour change per unit edit
        self.landmark_slopes: list[np.ndarray] = []  # [3] per case (NaN where too few faces were found)
        self.masks = {p: outside_mask(p, resolution) for p in TARGET_PROPERTIES}
        self.face = face_region(resolution)
        self.geometry = geometry
        self.columns = [GEOMETRY_COLUMNS.index(m) for m in target_measures(pose_measure).values()]

    def __call__(self, case, grid, scores, images):
        design = np.column_stack([grid, np.ones(len(grid))])
        coef, *_ = np.linalg.lstsq(design, scores.astype(np.float64), rcond=None)
        self.score_slopes.append(coef[:3])
        pixels = images.reshape(len(images), -1).astype(np.float64)
        pixel_coef, *_ = np.linalg.lstsq(design, pixels, rcond=None)
        per_pixel = np.abs(pixel_coef[:3]).reshape(3, *images.shape[1:]).mean(axis=3)  # [3, H, W]
        self.drift.append(np.array([per_pixel[j][self.masks[p]].mean() for j, p in enumerate(TARGET_PROPERTIES)]))
        face = images[:, self.face[0], self.face[1]].astype(np.float64).mean(axis=(1, 2))   # [50, 3] mean RGB
        tone = np.column_stack([face @ np.array([0.299, 0.587, 0.114]), face[:, 0] - face[:, 1],
                                face[:, 2] - face[:, 1]])
        tone_coef, *_ = np.linalg.lstsq(design, tone, rcond=None)
        self.lighting.append(np.column_stack([np.abs(tone_coef[:3, 0]), np.hypot(tone_coef[:3, 1], tone_coef[:3, 2])]))
        if self.geometry is not None:
            values = np.asarray(self.geometry.measure(images), np.float64)
            slopes = np.full(3, np.nan)
            for j, column in enumerate(self.columns):
                ok = np.isfinite(values[:, column])
                if ok.sum() > design.shape[1]:
                    slopes[j] = np.linalg.lstsq(design[ok], values[ok, column], rcond=None)[0][j]
            self.landmark_slopes.append(slopes)


def variant_name(kind: str, layers: tuple[int, int] | None) -> str:
    return f"{kind}_{'all' if layers is None else f'{layers[0]}-{layers[1]}'}"


def landmark_population_sd(ctx) -> np.ndarray | None:
    """SD of each landmark measure over the labelled samples ([4], GEOMETRY_COLUMNS order); None without
    landmark labels."""
    config = ctx.config
    if config.label_source != "landmarks":
        return None
    geometry = load_sample_geometry(ctx.samples_dir, config.num_samples, config.shard_size, config.landmark_samples,
                                    ctx.fingerprint)
    return np.nanstd(geometry, axis=0)


def per_own_change(row: dict, prop: str, leakage: str | None, own: str, suffix: str) -> dict:
    """`{prop}_{leakage,drift,brightness}_{suffix}`: those columns divided by |row[f"{prop}_{own}"]| (the edit's
    change of its own property); `leakage` names the leakage column, None for none."""
    denominator = max(abs(row[f"{prop}_{own}"]), 1e-9)
    sources = {"leakage": leakage, "drift": "drift_levels", "brightness": "brightness_levels"}
    return {f"{prop}_{name}_{suffix}": row[f"{prop}_{column}"] / denominator
            for name, column in sources.items() if column is not None}


def effect_row(kind: str, layers, result: dict, collector: EffectCollector, population_sd: np.ndarray,
               landmark_sd: np.ndarray | None, leakage_rows: list[dict]) -> dict:
    """One variant's row of variant_comparison.csv (and its rows of leakage.csv, appended)."""
    name = variant_name(kind, layers)
    slopes = np.mean(collector.score_slopes, axis=0) / population_sd  # [3, 8] in population SDs
    drift = np.mean(collector.drift, axis=0)
    lighting = np.mean(collector.lighting, axis=0)
    row = {"variant": name, "kind": kind, "layers": "all" if layers is None else f"{layers[0]}-{layers[1]}",
           "cases": result["cases"], "passed": result["passed"], "pass_rate": result["pass_rate"]}
    for j, prop in enumerate(TARGET_PROPERTIES):
        others = [q for q in SCORE_NAMES if q != prop]
        row[f"{prop}_mean_abs_r"] = result["mean_abs_corr"][prop]
        row[f"{prop}_self_effect_sd"] = float(slopes[j, score_column(prop)])
        row[f"{prop}_leakage_sd"] = float(np.mean([abs(slopes[j, score_column(q)]) for q in others]))
        row[f"{prop}_drift_levels"] = float(drift[j])
        row[f"{prop}_brightness_levels"] = float(lighting[j, 0])
        row[f"{prop}_colour_levels"] = float(lighting[j, 1])
        # per unit of the property's own change, so a weaker (layer-range) edit is not credited as cleaner
        row |= per_own_change(row, prop, "leakage_sd", "self_effect_sd", "per_self")
        for q in SCORE_NAMES:
            leakage_rows.append({"variant": name, "edited": prop, "score": q,
                                 "change_per_unit_sd": float(slopes[j, score_column(q)])})
    if landmark_sd is not None and collector.landmark_slopes:
        own = np.nanmean(collector.landmark_slopes, axis=0) / landmark_sd[collector.columns]
        for j, prop in enumerate(TARGET_PROPERTIES):
            row[f"{prop}_landmark_self_sd"] = float(own[j])
            row |= per_own_change(row, prop, None, "landmark_self_sd", "per_landmark_sd")
    return row


def run_compare(ctx, force: bool = False, geometry=None) -> dict:
    """geometry: the landmark model for the landmark columns (default: FaceGeometry in landmark_workers processes)."""

    config = ctx.config
    out = ctx.out
    summary_path = out / "compare" / "compare_summary.json"
    key = record_text({"run": ctx.fingerprint, "cases": config.compare_cases, "layers": config.compare_layers,
                       "unit": config.edit_unit, "scale": config.edit_scales, "edit_layers": config.edit_layers,
                       "kind": config.direction_kind, "landmarks": config.label_source == "landmarks"})
    previous = None if force else read_record(summary_path, fix="delete it or re-run with --force")
    if previous is not None and not what_differs(previous.get("key"), key):
        return previous | {"skipped": True}
    generator = ctx.generator
    samples = load_samples(ctx.samples_dir, config.num_samples, config.shard_size, ctx.fingerprint)
    population_sd = samples.scores.std(axis=0).astype(np.float64)
    medians = read_medians(ctx.medians_dir)
    cases = Cases(*sample_codes(config.eval_seed, range(config.compare_cases), generator.z_space_dim,
                                generator.label_size), None, "random")
    range_layers = parse_layer_range(config.compare_layers)
    variants = [(kind, layers) for kind in ("plain", "conditional") for layers in (None, range_layers)]
    landmark_sd = landmark_population_sd(ctx)
    rows, leakage_rows = [], []
    with contextlib.ExitStack() as stack:
        model = (stack.enter_context(measuring(geometry, config.landmark_workers)) if landmark_sd is not None
                 else None)
        for kind, layers in variants:
            collector = EffectCollector(generator.resolution, model, config.pose_measure)
            settings = EvaluationSettings(config.thresholds, layers, config.eval_batch_size, False, 0, 0)
            directions_of = cached_directions(vectors_dir(ctx, kind))
            result = evaluate(generator, ctx.scorer, directions_of, medians, cases,
                              out / "compare" / variant_name(kind, layers), settings,
                              weight_scales(ctx, directions_of, samples.w), key, True, ctx.device, ctx.progress,
                              collect=collector)
            rows.append(effect_row(kind, layers, result, collector, population_sd, landmark_sd, leakage_rows))
    table = pd.DataFrame(rows)
    atomic_write_csv(table, out / artifacts.VARIANT_COMPARISON_FILE, index=False)
    leakage = pd.DataFrame(leakage_rows)
    atomic_write_csv(leakage, out / "leakage.csv", index=False)
    chosen = variant_name(config.direction_kind, parse_layer_range(config.edit_layers))
    write_strips(ctx, cases, medians, samples.w)
    write_summary_png(table, leakage, chosen if chosen in set(table.variant) else table.variant[0],
                      out / artifacts.SUMMARY_PNG_FILE)
    ranked = table.assign(total=sum(table[f"{p}_mean_abs_r"] for p in TARGET_PROPERTIES)).sort_values(
        ["pass_rate", "total"], ascending=False)
    lines = [f"{r.variant}: pass {r.passed}/{r.cases}, mean |r| " +
             " ".join(f"{p} {getattr(r, f'{p}_mean_abs_r'):.3f}" for p in TARGET_PROPERTIES) +
             ", leakage (SD) " + " ".join(f"{p} {getattr(r, f'{p}_leakage_sd'):.3f}" for p in TARGET_PROPERTIES) +
             ", drift/self " + " ".join(f"{p} {getattr(r, f'{p}_drift_per_self'):.1f}" for p in TARGET_PROPERTIES) +
             ", brightness (levels/unit) " + " ".join(f"{p} {getattr(r, f'{p}_brightness_levels'):.2f}"
                                                      for p in TARGET_PROPERTIES) +
             ("" if landmark_sd is None else ", drift/landmark SD " + " ".join(
                 f"{p} {getattr(r, f'{p}_drift_per_landmark_sd'):.1f}" for p in TARGET_PROPERTIES))
             for r in table.itertuples()]
    result = {"key": key, "variants": rows, "best_variant": str(ranked.variant.iloc[0]), "lines": lines}
    atomic_write_text(summary_path, json.dumps(result, indent=2) + "\n")
    return result


def write_strips(ctx, cases, medians, w_sample) -> None:
    """strips/strip_{property}.png: case 0 edited along the chosen directions from -2 to +2."""

    config = ctx.config
    generator = ctx.generator
    directions_of = cached_directions(vectors_dir(ctx))
    w = codes_to_w(generator, cases.z[:1], cases.labels[:1], ctx.device)
    unedited = render(generator, generator.truncation(w))
    group = group_name(score(ctx.scorer, unedited)[0], medians)
    scale = weight_scales(ctx, directions_of, w_sample)(group)
    weights = np.linspace(-2.0, 2.0, config.strip_weights)
    for prop in TARGET_PROPERTIES:
        wp = edit_w(w.expand(len(weights), -1), directions_of(group), {prop: weights * scale[prop]},
                    generator.num_layers, parse_layer_range(config.edit_layers))
        save_image(make_grid(render(generator, wp), ncols=len(weights)), ctx.out / artifacts.STRIPS_DIR / f"strip_{prop}.png")


def write_summary_png(table: pd.DataFrame, leakage: pd.DataFrame, chosen: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_leak) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(table)
    x = np.arange(len(TARGET_PROPERTIES))
    for i, row in enumerate(table.itertuples()):
        values = [getattr(row, f"{p}_mean_abs_r") for p in TARGET_PROPERTIES]
        ax_r.bar(x + i * width, values, width, label=f"{row.variant} (pass {row.pass_rate:.0%})")
    ax_r.set_xticks(x + width * (len(table) - 1) / 2, TARGET_PROPERTIES)
    ax_r.set_ylim(0, 1.3)
    ax_r.set_yticks(np.linspace(0, 1, 6))
    ax_r.set_ylabel("mean |r| over cases")
    ax_r.legend(fontsize=8, loc="upper center", ncol=2)
    ax_r.set_title("correlation of edit weight and score")
    part = leakage[leakage.variant == chosen].pivot(index="edited", columns="score", values="change_per_unit_sd")
    part = part.loc[list(TARGET_PROPERTIES), list(SCORE_NAMES)]
    image = ax_leak.imshow(part.to_numpy(), cmap="coolwarm", vmin=-1, vmax=1)
    ax_leak.set_xticks(range(len(SCORE_NAMES)), SCORE_NAMES, rotation=40, ha="right", fontsize=8)
    ax_leak.set_yticks(range(len(TARGET_PROPERTIES)), TARGET_PROPERTIES)
    for (r, c), v in np.ndenumerate(part.to_numpy()):
        ax_leak.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax_leak.set_title(f"score change per unit edit, population SD ({chosen})")
    fig.colorbar(image, ax=ax_leak, shrink=0.8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from common.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
