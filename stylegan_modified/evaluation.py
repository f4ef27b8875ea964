"""`--evaluate N`: classifier fractions of the generator before and after fine-tuning, and how well the generated
faces follow the requested labels (Pearson r by the property CNN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from common.errors import PipelineError
from common.fileio import atomic_write_text
from common.images import save_grid
from common.paths import resolve_repo_path
from stylegan.checkpoint import load_generator
from stylegan.stylegan_generator import StyleGANGenerator
from stylegan_modified.config import LABEL_SIZE, PROPERTY_COLUMNS, FineTuneConfig
from stylegan_modified.models import generate_uint8, load_generator_file
from stylegan_modified.monitor import Classifier, load_classifiers


def sample_scores(generator: StyleGANGenerator, classifiers: dict[str, Classifier], num: int, seed: int,
                  label_mode: str = "normal", batch_size: int = 100) -> dict[str, np.ndarray]:
    """Scores of `num` seeded samples (z ~ N(0, 1); labels N(0, 1) or zeros) by each classifier."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(num, generator.z_space_dim, generator=rng)
    labels = torch.randn(num, max(generator.label_size, 1), generator=rng)[:, :generator.label_size]
    if label_mode == "zeros":
        labels = torch.zeros_like(labels)
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, num, batch_size):
        images = generate_uint8(generator, z[start:start + batch_size], labels[start:start + batch_size])
        for name, fn in classifiers.items():
            result = fn(images)
            # a classifier may read several properties at once (the annotator): name_property
            parts = {f"{name}_{key}": value for key, value in result.items()} if isinstance(result, dict) \
                else {name: result}
            for key, value in parts.items():
                out.setdefault(key, []).append(np.asarray(value, np.float64))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def annotator_classifier(log: Callable[[str], None] = print) -> Callable[[torch.Tensor], dict[str, np.ndarray]] | None:
    """The embedded annotator (cnn/annotate.py) as a multi-property classifier: 0/1 labels for gender
    (1 = female), quality, age (1 = looks old) and glass; None where its packages are missing."""
    try:
        from cnn.annotate import FaceAnnotator

        annotator = FaceAnnotator()
    except PipelineError as exc:
        log(f"annotator not available ({exc}); evaluation by the CNN ensembles only")
        return None

    def read(images_uint8: torch.Tensor) -> dict[str, np.ndarray]:
        frame = annotator.annotate(list(images_uint8.permute(0, 2, 3, 1).contiguous().numpy()))
        return {prop: frame[prop].to_numpy(np.float64) for prop in ("gender", "quality", "age", "glass")}

    return read


def evaluate_fine_tuning(config: FineTuneConfig, num: int, log=print, use_annotator: bool = True) -> dict:
    """Classifier fractions (score >= 0.5) on `num` samples of the base (v1) or v1 (v8) and of the result, by the
    config's CNN ensembles and (`use_annotator`) by the annotator (`annotator_{gender,quality,age,glass}`)."""
    classifiers = load_classifiers(config, log)
    annotator = annotator_classifier(log) if use_annotator else None
    if annotator is not None:
        classifiers["annotator"] = annotator
    if not classifiers:
        log(f"no classifier ensembles in {config.classifier_models_dir}; run run_cnn.py first")
        return {}
    if config.version == "v1":
        before = load_generator(resolve_repo_path(config.init_checkpoint), config.init_entry,
                                **config.generator_kwargs(label_size=0))
    else:
        before = load_generator_file(resolve_repo_path(config.init_checkpoint), config.init_entry,
                                     **config.generator_kwargs())
    results = {}
    grid_rows = []  # 16 samples per generator (same z, N(0, 1) labels), to see what the scores were given
    grid_rng = torch.Generator().manual_seed(config.seed + 4444)
    grid_z, grid_labels = torch.randn(16, config.z_space_dim, generator=grid_rng), torch.randn(16, LABEL_SIZE,
                                                                                             generator=grid_rng)
    for name, path, entry in (("before", None, None),
                              ("generator_smooth", config.export_generator, "generator_smooth"),
                              ("generator", config.export_generator, "generator")):
        generator = before if path is None else load_generator_file(resolve_repo_path(path), entry,
                                                                    **config.generator_kwargs())
        grid_rows.append(generate_uint8(generator, grid_z, grid_labels[:, :generator.label_size]))
        for label_mode in ("normal", "zeros"):
            if label_mode == "zeros" and entry != "generator_smooth":
                continue  # the unconditioned base takes no label; the raw G only with the labels stage 1 uses
            # the annotator (seconds per 100 faces) reads the generator before and the one later stages sample from
            readers = classifiers if path is None or (entry, label_mode) == ("generator_smooth", "normal") else \
                {k: v for k, v in classifiers.items() if k != "annotator"}
            scores = sample_scores(generator, readers, num, seed=config.seed + 4242, label_mode=label_mode)
            key = name if path is None else f"{name}/labels_{label_mode}"
            results[key] = {prop: {"mean": round(float(s.mean()), 4), "fraction_ge_0.5": round(float((s >= 0.5).mean()), 4)}
                            for prop, s in scores.items()}
            log(f"{key}: " + ", ".join(f"{p} {v['fraction_ge_0.5']:.3f} (mean {v['mean']:.3f})"
                                       for p, v in results[key].items()))
    if config.property_cnn:
        generator = load_generator_file(resolve_repo_path(config.export_generator), "generator_smooth",
                                        **config.generator_kwargs())
        results["label_pearson_r"] = label_correlations(generator, property_reader(config.property_cnn), num,
                                                        config.seed + 4343)
        log(f"Pearson r (requested label vs property CNN reading): {results['label_pearson_r']}")
    else:
        log("no --property-cnn given: label-to-image correlation not measured")
    out = resolve_repo_path(config.run_dir) / f"evaluation_{num}.json"
    save_grid(torch.cat(grid_rows).permute(0, 2, 3, 1).numpy(), out.with_name("evaluation_samples.png"), ncols=16)
    atomic_write_text(out, json.dumps({"num_samples": num, "seed": config.seed + 4242, "results": results},
                                      indent=2) + "\n")
    log(f"-> {out}")
    return results


def label_correlations(generator: StyleGANGenerator, read_properties: Callable[[torch.Tensor], np.ndarray],
                       num: int, seed: int, batch_size: int = 100) -> dict[str, float]:
    """Per property, Pearson r between the requested label value (N(0, 1) per dim, independent) and the
    reading of the generated image by `read_properties` ([N, 3, R, R] uint8 -> [N, 7], the label order)."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(num, generator.z_space_dim, generator=rng)
    labels = torch.randn(num, LABEL_SIZE, generator=rng)
    readings = np.concatenate([np.asarray(read_properties(generate_uint8(generator, z[s:s + batch_size],
                                                                         labels[s:s + batch_size])))
                               for s in range(0, num, batch_size)])
    return {name: round(float(np.corrcoef(labels[:, k].numpy(), readings[:, k])[0, 1]), 4)
            for k, name in enumerate(PROPERTY_COLUMNS)}


def property_reader(path: str | Path) -> Callable[[torch.Tensor], np.ndarray]:
    """The property CNN of `path` (property_score_cnn), its outputs put in PROPERTY_COLUMNS order."""
    from property_score_cnn.scoring import load_property_cnn, score_images

    model = load_property_cnn(resolve_repo_path(path))
    names = list(getattr(model, "output_names", []))
    index = [names.index(c.removesuffix("_score")) if c.removesuffix("_score") in names else k
             for k, c in enumerate(PROPERTY_COLUMNS)]

    def read(images_uint8: torch.Tensor) -> np.ndarray:
        return score_images(model, images_uint8, device="cpu").numpy()[:, index]

    return read
