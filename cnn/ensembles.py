"""Trained stage-2 / v8 property ensembles as a scoring API for other stages.

    from cnn.ensembles import load_ensembles
    ensembles = load_ensembles(profile="embedded", stage="v8_dataset")     # every property of the run
    scores = ensembles.scores(images_uint8)          # {"gender": (N,), "quality": (N,), "age": ..., "glass": ...}

    gender = load_ensemble("embedded", None, "gender")                      # one property of stage 2
    gender.scores(images_uint8)                                             # (N,) mean of the K fold models

`images_uint8`: a batch from the generator or from PNGs, NHWC or NCHW uint8 (numpy or torch) at the
profile's resolution. Scores are the mean sigmoid output of the K fold models in eval mode under
inference_mode, batched, on `device` (default: the config's, common/devices.py) - the same numbers
run_cnn.py writes to its inference CSVs (before their 4-decimal rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnn.config import CnnConfig
from cnn.fold_models import load_fold_model, model_path
from cnn.training import predict_scores
from common.config import resolve_config
from common.devices import choose_device
from common.errors import PipelineError


def as_nchw_uint8(images, resolution: int) -> torch.Tensor:
    """NHWC or NCHW uint8 (numpy or torch) -> contiguous NCHW uint8 tensor, size checked."""
    batch = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if batch.ndim != 4 or batch.dtype != torch.uint8:
        raise PipelineError(f"expected a uint8 image batch [N, H, W, 3] or [N, 3, H, W], got "
                            f"{batch.dtype} {tuple(batch.shape)}")
    if batch.shape[1] != 3 and batch.shape[-1] == 3:
        batch = batch.permute(0, 3, 1, 2)
    if tuple(batch.shape[1:]) != (3, resolution, resolution):
        raise PipelineError(f"the property ensembles expect {resolution}x{resolution} RGB images, got "
                            f"{tuple(batch.shape[1:])} (NCHW); use the matching profile")
    return batch.contiguous()


@dataclass
class PropertyEnsemble:
    prop: str
    models: list[torch.nn.Module]
    resolution: int
    device: torch.device
    batch_size: int = 256

    def scores(self, images_uint8) -> np.ndarray:
        """(N,) float64: the mean of the fold models' sigmoid scores."""
        batch = as_nchw_uint8(images_uint8, self.resolution).to(self.device)
        per_model = [predict_scores(m, batch, self.batch_size) for m in self.models]
        return np.mean(np.asarray(per_model, np.float64), axis=0)


@dataclass
class Ensembles:
    members: dict[str, PropertyEnsemble]

    def scores(self, images_uint8) -> dict[str, np.ndarray]:
        if not self.members:
            return {}
        first = next(iter(self.members.values()))
        batch = as_nchw_uint8(images_uint8, first.resolution)
        return {prop: member.scores(batch) for prop, member in self.members.items()}


def _stage_config(profile: str, stage: str | None) -> CnnConfig:
    return resolve_config(CnnConfig, "cnn", profile=profile, stage=stage)


def ensemble_from_config(config: CnnConfig, prop: str, device: str | None = None) -> PropertyEnsemble:
    """The K fold models of `prop` in the run that `config` describes."""
    if prop not in config.property_names:
        raise PipelineError(f"property '{prop}' is not part of this run; it has {', '.join(config.property_names)}")
    paths = [model_path(config.path("models_dir"), prop, k) for k in range(config.num_folds)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise PipelineError(f"{missing[0]}: {prop} fold model not found; run run_cnn.py for this profile/stage first")
    target = choose_device(config.device if device is None else device)
    models = [load_fold_model(config, prop, k).to(target) for k in range(config.num_folds)]
    return PropertyEnsemble(prop, models, config.resolution, target, config.eval_batch_size)


def load_ensemble(profile: str = "embedded", stage: str | None = None, prop: str = "gender",
                  device: str | None = None) -> PropertyEnsemble:
    """The K fold models of `prop` as trained by `run_cnn.py --profile PROFILE [--stage STAGE]`."""
    return ensemble_from_config(_stage_config(profile, stage), prop, device)


def load_ensembles(profile: str = "embedded", stage: str | None = None, properties: list[str] | None = None,
                   device: str | None = None, config: CnnConfig | None = None) -> Ensembles:
    """Every property of the run (or `properties`); `config` instead of profile/stage for other folders."""
    config = config or _stage_config(profile, stage)
    return Ensembles({prop: ensemble_from_config(config, prop, device) for prop in properties or config.property_names})


def ensemble_scores(images_uint8, profile: str = "embedded", stage: str | None = None,
                    properties: list[str] | None = None, device: str | None = None) -> dict[str, np.ndarray]:
    """One-shot convenience: load the ensembles and score `images_uint8` (load once and reuse
    `load_ensembles(...).scores` when scoring many batches)."""
    return load_ensembles(profile, stage, properties, device).scores(images_uint8)
