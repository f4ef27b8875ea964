"""What every VectorFind phase shares: the run (its generator, scorer and folders: Context), the grouping medians and
the saved direction sets, read back by the evaluate and compare phases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import artifacts
from common.devices import choose_device, set_torch_threads
from common.errors import PipelineError
from common.fileio import read_csv_checked
from common.freshness import checkpoint_digest
from common.paths import resolve_repo_path
from vectorfind.directions import TARGET_PROPERTIES, load_directions
from vectorfind.models import Scorer, choose_generator, load_chosen_generator, property_cnn_scorer
from vectorfind.sampling import distributed_rank_world, run_fingerprint
from vectorfind.settings import VectorFindConfig

MEDIAN_FILE = "property_scores_mean_and_median.csv"
SAMPLED_FILE = "property_scores_sampled.csv"
MEDIAN_COLUMNS = {"hair_color": "hair_color", "hair_length": "hair_length", "background_mean": "background_score",
                  "hairstyle": "hairstyle"}  # our score name -> the original's column name


@dataclass
class Context:
    """What the phases run on; run_vectorfind.py builds it from the config, tests inject tiny models."""

    config: VectorFindConfig
    generator: torch.nn.Module
    scorer: Scorer
    generator_description: str
    fingerprint: str
    device: torch.device
    rank: int = 0
    world: int = 1
    progress: bool = True

    @property
    def out(self) -> Path:
        return resolve_repo_path(self.config.output_dir)

    @property
    def samples_dir(self) -> Path:
        return self.out / "samples"

    @property
    def medians_dir(self) -> Path:
        return resolve_repo_path(self.config.medians_dir)


def build_context(config: VectorFindConfig, progress: bool = True) -> Context:
    set_torch_threads(config.num_threads)
    rank, world = distributed_rank_world()
    device = choose_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    choice = choose_generator(config.generator, config.profile)
    generator = load_chosen_generator(choice, device)
    # a fixed inner batch (a multiple of stylegan.generate.ROW_MULTIPLE), so scores do not depend on --batch-size
    scorer = property_cnn_scorer(config.property_cnn, generator.resolution, 256, device)
    cnn_path = resolve_repo_path(config.property_cnn)
    fingerprint = run_fingerprint(choice.path, f"{cnn_path.name}:{checkpoint_digest(cnn_path)}", config.seed,
                                  choice.label_size)
    return Context(config, generator, scorer, choice.describe(), fingerprint, device, rank, world,
                   progress and rank == 0)


def read_medians(medians_dir: Path) -> dict[str, float]:
    path = medians_dir / MEDIAN_FILE
    if not path.is_file():
        raise PipelineError(f"{path}: grouping medians not found; run the sample phase (run_vectorfind.py sample)")
    fix = "re-run the sample phase (run_vectorfind.py sample), which writes it again"
    table = read_csv_checked(path, fix)
    missing = [c for c in ("value_type", *MEDIAN_COLUMNS.values()) if c not in table]
    row = table[table.value_type == "median"] if not missing else table.iloc[:0]
    if row.empty or missing:
        raise PipelineError(f"{path}: needs value_type 'median' and columns {', '.join(MEDIAN_COLUMNS.values())}; "
                            f"{fix}")
    medians = {p: pd.to_numeric(row.iloc[0][c], errors="coerce") for p, c in MEDIAN_COLUMNS.items()}
    bad = [MEDIAN_COLUMNS[p] for p, v in medians.items() if not np.isfinite(v)]
    if bad:
        raise PipelineError(f"{path}: median {bad[0]} = '{row.iloc[0][bad[0]]}', expected a finite number; {fix}")
    return {p: float(v) for p, v in medians.items()}


def vectors_dir(ctx: Context, kind: str | None = None) -> Path:
    return resolve_repo_path(artifacts.vectors_dir(kind, ctx.config.output_dir))


def weight_scales(ctx: Context, directions_of, w: np.ndarray | None):
    """Grid-weight multipliers per group: the property's edit scale, times the SD of the sample's w along each
    vector ('sd')."""
    config = ctx.config
    scales = config.edit_scales
    if config.edit_unit == "w":
        return lambda group: dict(scales)
    cache: dict[str, dict[str, float]] = {}

    def of(group: str) -> dict[str, float]:
        if group not in cache:
            vectors = directions_of(group)
            cache[group] = {p: scales[p] * float(np.std(w.astype(np.float64) @ vectors[p].astype(np.float64)))
                            for p in TARGET_PROPERTIES}
        return cache[group]

    return of


def cached_directions(directory: Path):
    cache: dict[str, dict[str, np.ndarray]] = {}

    def of(group: str) -> dict[str, np.ndarray]:
        if group not in cache:
            cache[group] = load_directions(directory, group)
        return cache[group]

    return of
