"""Which eyes / mouth / pose directions move the face's geometry? Candidates graded by landmarks.

Runs on a finished VectorFind output (samples, landmark labels, direction sets) and grades candidate direction
sets the way stage 9 does (the v8 grid of 50 edits per case), but re-measures every edited image with the
68-landmark geometry (segmentation/face_geometry.py) as well as the merged property CNN:

    svm_plain / svm_conditional   the direction sets stage 8 wrote (pooled landmark labels)
    ridge_plain / ridge_conditional   ridge regression of each landmark measure on w (all labelled samples, not
                                  just the top and bottom 20 %), conditional = projected off the other two and
                                  the grouping attributes' directions as stage 8 does
each with all layers or a layer range, and each edit strength (grid weights times `--scales`).

Per candidate (mean over cases): landmark |r| and right-way share per property, the CNN's |r|, the slopes of
every measure on every grid weight (cross-talk: how much the mouth and pose edits move the eye measure,
against the eyes edit's own slope) and the face's brightness change per unit edit. Strips of case 0 go to
`<out>/strips/`.

    python bench/direction_trials.py --output-root DIR [--quick] [--cases 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.config import add_run_arguments, resolve_config  # noqa: E402
from common.fileio import atomic_write_csv, save_image  # noqa: E402
from common.images import make_grid  # noqa: E402
from segmentation.face_geometry import GEOMETRY_COLUMNS, GeometryPool  # noqa: E402
from vectorfind.compare import face_region  # noqa: E402
from vectorfind.directions import GROUP_NAMES, TARGET_PROPERTIES, edit_w, load_directions, score_column  # noqa: E402
from vectorfind.evaluation import edit_grid  # noqa: E402
from vectorfind.landmarks import landmark_scores, load_sample_geometry, target_measures  # noqa: E402
from vectorfind.sampling import codes_to_w, load_samples, render, sample_codes, score  # noqa: E402
from vectorfind.settings import VectorFindConfig, parse_layer_range  # noqa: E402
from vectorfind.context import build_context, vectors_dir  # noqa: E402
from vectorfind.svm import project_off  # noqa: E402


def ridge_directions(w: np.ndarray, labels: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """Unit ridge-regression gradients of each standardised target measure on centred w."""
    x = w.astype(np.float64) - w.mean(axis=0)
    gram = x.T @ x + alpha * len(x) * np.eye(x.shape[1])
    out = {}
    for prop in TARGET_PROPERTIES:
        y = labels[:, score_column(prop)].astype(np.float64)
        y = (y - y.mean()) / y.std()
        coef = np.linalg.solve(gram, x.T @ y)
        out[prop] = (coef / np.linalg.norm(coef)).astype(np.float32)
    return out


def conditional(vectors: dict[str, np.ndarray], attributes: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {p: project_off(vectors[p], [vectors[q] for q in TARGET_PROPERTIES if q != p] + attributes)
            for p in TARGET_PROPERTIES}


def attribute_directions(ctx, samples) -> list[np.ndarray]:
    """The four grouping attributes' directions as stage 8 fits them (whole sample, top/bottom 20 %)."""
    from vectorfind.svm import fit_directions

    found = fit_directions(samples.w[:4000], samples.scores[:4000], {}, pooled=True, log=lambda *_: None)
    return list(found.attributes.values())


def brightness(images: np.ndarray) -> np.ndarray:
    rows, cols = face_region(images.shape[1])
    return images[:, rows, cols].astype(np.float64).mean(axis=(1, 2, 3))


def grade(ctx, vectors, layers, scale, z, labels, pool, measures) -> tuple[dict, np.ndarray]:
    """scale: {property: grid-weight multiplier}."""
    generator = ctx.generator
    grid = edit_grid()
    design = np.column_stack([grid, np.ones(len(grid))])
    w = codes_to_w(generator, z, labels, ctx.device)
    per_case, strip = [], None
    for i in range(len(z)):
        wp = edit_w(w[i:i + 1].expand(len(grid), -1), vectors,
                    {p: grid[:, j] * scale[p] for j, p in enumerate(TARGET_PROPERTIES)}, generator.num_layers, layers)
        images = render(generator, wp)
        geometry = pool.measure(images)
        cnn = score(ctx.scorer, images)
        row = {}
        for j, prop in enumerate(TARGET_PROPERTIES):
            y = geometry[:, GEOMETRY_COLUMNS.index(measures[prop])]
            ok = np.isfinite(y)
            row[f"{prop}_lm_r"] = float(np.corrcoef(grid[ok, j], y[ok])[0, 1]) if ok.sum() > 5 else np.nan
            row[f"{prop}_cnn_r"] = float(np.corrcoef(grid[:, j], cnn[:, score_column(prop)])[0, 1])
            if ok.sum() > 5:
                coef, *_ = np.linalg.lstsq(design[ok], y[ok], rcond=None)
                for k, edited in enumerate(TARGET_PROPERTIES):
                    row[f"d_{measures[prop]}_by_{edited}"] = float(coef[k])
        coef, *_ = np.linalg.lstsq(design, brightness(images), rcond=None)
        for k, edited in enumerate(TARGET_PROPERTIES):
            row[f"brightness_by_{edited}"] = float(abs(coef[k]))
        per_case.append(row)
        if i == 0:
            weights = np.linspace(-2.0, 2.0, 7)
            strip = np.concatenate([render(generator, edit_w(w[:1].expand(len(weights), -1), vectors,
                                                             {prop: weights * scale[prop]}, generator.num_layers,
                                                             layers))
                                    for prop in TARGET_PROPERTIES])
    table = pd.DataFrame(per_case)
    summary = {}
    for prop in TARGET_PROPERTIES:
        summary[f"{prop}_lm_abs_r"] = float(table[f"{prop}_lm_r"].abs().mean())
        summary[f"{prop}_right_way"] = float((table[f"{prop}_lm_r"] > 0).mean())
        summary[f"{prop}_cnn_abs_r"] = float(table[f"{prop}_cnn_r"].abs().mean())
    for column in table.columns:
        if column.startswith(("d_", "brightness_")):
            summary[column] = float(table[column].mean())
    return summary, strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=1e-3, help="ridge penalty per sample")
    parser.add_argument("--layers", default="all,0-3,0-5,2-7", help="layer ranges tried ('all' = every layer)")
    parser.add_argument("--scales", default="1.0",
                        help="grid-weight multipliers tried, comma-separated: one number for all three properties "
                             "or eyes:mouth:pose (e.g. 2:1:1.5)")
    parser.add_argument("--unit", choices=("w", "sd"), default="w",
                        help="grid weights in w units, or in SDs of the sample's w along each vector")
    parser.add_argument("--kinds", default="svm_plain,svm_conditional,ridge_plain,ridge_conditional")
    parser.add_argument("--out", default="", help="folder for the table and strips (default <root>/vectorfind/"
                                                  "direction_trials)")
    args = parser.parse_args()
    args.dry_run = False
    config = resolve_config(VectorFindConfig, "vectorfind", args)
    ctx = build_context(config, progress=False)
    out = Path(args.out) if args.out else ctx.out.parent / "direction_trials"
    samples = load_samples(ctx.samples_dir, config.num_samples, config.shard_size, ctx.fingerprint)
    geometry = load_sample_geometry(ctx.samples_dir, config.num_samples, config.shard_size, config.landmark_samples,
                                    ctx.fingerprint)
    labels, keep = landmark_scores(samples.scores, geometry, config.pose_measure)
    measures = target_measures(config.pose_measure)
    kinds = args.kinds.split(",")
    candidates = {}
    for kind in kinds:
        if kind.startswith("svm_"):
            candidates[kind] = load_directions(vectors_dir(ctx, kind[4:]), GROUP_NAMES[0])
    if any(k.startswith("ridge_") for k in kinds):
        ridge = ridge_directions(samples.w[keep], labels, args.alpha)
        if "ridge_plain" in kinds:
            candidates["ridge_plain"] = ridge
        if "ridge_conditional" in kinds:
            candidates["ridge_conditional"] = conditional(ridge, attribute_directions(ctx, samples))
    cosines = {f"{a}~{b}:{p}": float(candidates[a][p] @ candidates[b][p]) for a in candidates for b in candidates
               if a < b for p in TARGET_PROPERTIES}
    z, codes = sample_codes(config.eval_seed, range(args.cases), ctx.generator.z_space_dim, ctx.generator.label_size)
    rows = []
    with GeometryPool(args.workers) as pool, torch.inference_mode():
        for name, vectors in candidates.items():
            for layer_text in args.layers.split(","):
                layers = None if layer_text == "all" else parse_layer_range(layer_text)
                sd = {p: float(np.std(samples.w.astype(np.float64) @ vectors[p].astype(np.float64)))
                      for p in TARGET_PROPERTIES}
                for factor_text in args.scales.split(","):
                    parts = [float(v) for v in factor_text.split(":")]
                    factors = dict(zip(TARGET_PROPERTIES, parts * 3 if len(parts) == 1 else parts))
                    scale = {p: factors[p] * (sd[p] if args.unit == "sd" else 1.0) for p in TARGET_PROPERTIES}
                    started = time.perf_counter()
                    summary, strip = grade(ctx, vectors, layers, scale, z, codes, pool, measures)
                    label = f"{name}_{layer_text}_x{factor_text}{args.unit}"
                    save_image(make_grid(strip, ncols=7), out / "strips" / f"{label}.png")
                    rows.append({"candidate": label, "kind": name, "layers": layer_text, "scale": factor_text, "unit": args.unit}
                                | {f"{p}_sd_of_w": sd[p] for p in TARGET_PROPERTIES} | summary)
                    print(f"{label}: landmarks |r| " + " ".join(
                        f"{p} {summary[f'{p}_lm_abs_r']:.2f} ({summary[f'{p}_right_way']:.0%})"
                        for p in TARGET_PROPERTIES) + " | cnn |r| " + " ".join(
                        f"{p} {summary[f'{p}_cnn_abs_r']:.2f}" for p in TARGET_PROPERTIES) +
                        f" | eye slope by e/m/p " + " ".join(
                        f"{summary.get(f'd_eye_opening_by_{p}', np.nan):+.4f}" for p in TARGET_PROPERTIES) +
                        f" | {time.perf_counter() - started:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    atomic_write_csv(table, out / "direction_trials.csv", index=False)
    (out / "direction_cosines.json").write_text(json.dumps(cosines, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
