"""What watches a fine-tuning run: the stage-2 property ensembles that score its fixed samples, loaded through
cnn/ensembles.py with the architecture the stage that trained them configures, and the landmark model of the variety
figures."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from common.config import resolve_config
from common.errors import PipelineError
from common.freshness import read_record
from common.paths import resolve_repo_path
from stylegan_modified.config import FineTuneConfig

# A classifier maps uint8 images [N, 3, R, R] to one score per image (e.g. a stage-2 ensemble's mean).
Classifier = Callable[[torch.Tensor], np.ndarray]

# The runs of run_cnn.py whose ensembles a fine-tuning run may monitor, the version's own first: v1 learns from stage
# 2's filtered faces ([cnn]), v8 from the v8 dataset that stage 7 filtered ([v8_dataset.cnn]).
CLASSIFIER_STAGES = {"v1": (None, "v8_dataset"), "v8": ("v8_dataset", None)}


def classifier_config(config: FineTuneConfig):
    """The stage-2 config of the run whose models_dir is classifier_models_dir: the architecture (resolution,
    width_multiplier, properties) its ensembles were trained with. A folder of neither run is read with the version's
    own run's config."""
    from cnn.config import CnnConfig

    wanted = resolve_repo_path(config.classifier_models_dir)
    first = None
    for stage in CLASSIFIER_STAGES[config.version]:
        candidate = resolve_config(CnnConfig, "cnn", profile=config.profile, stage=stage)
        if candidate.path("models_dir") == wanted:
            return candidate
        first = first or candidate
    return dataclasses.replace(first, models_dir=str(wanted))


def stage2_ensemble(prop: str, cnn_config, device: str | None = None) -> Classifier | None:
    """The mean score of the property's fold models in cnn_config's models_dir (cnn/ensembles.py, built as stage 2
    builds them); None when none of them is there. A fold missing beside others, or a file that does not load, is a
    PipelineError naming it."""
    from cnn.ensembles import ensemble_from_config
    from cnn.fold_models import model_path

    paths = [model_path(cnn_config.path("models_dir"), prop, k) for k in range(cnn_config.num_folds)]
    missing = [path for path in paths if not path.is_file()]
    if len(missing) == len(paths):
        return None
    if missing:
        raise _not_found(missing[0], prop)
    return ensemble_from_config(cnn_config, prop, device).scores


def _not_found(path, prop: str) -> PipelineError:
    return PipelineError(f"{path}: {prop} fold model not found, so the monitor cannot score {prop}; run run_cnn.py "
                         f"for the stage that trains {path.parent} first, or leave {prop} out of monitor_classifiers")


def left_out_for_scarce_labels(cnn_config, prop: str) -> bool:
    """Whether the stage that trains these ensembles left `prop` out for too few labels of one class
    (skip_scarce_properties; configs/embedded.toml: stage 7's glass): it then recorded the properties it trained in
    model_info.json, and not this one."""
    from cnn.fold_models import MODEL_INFO_FILE

    if not cnn_config.skip_scarce_properties:
        return False
    trained = read_record(cnn_config.path("models_dir") / MODEL_INFO_FILE, fix="re-run run_cnn.py with --retrain")
    return trained is not None and prop not in trained


def ensemble_classifiers(cnn_config, props: list[str], device: str | None = None,
                         log: Callable[[str], None] = print) -> dict[str, Classifier]:
    """{prop: classifier} for each of `props`; one that cannot be loaded is a PipelineError naming the file and what
    to do, except a property its stage left out for scarce labels (logged, not monitored)."""
    from cnn.fold_models import model_path

    models_dir = cnn_config.path("models_dir")
    out = {}
    for prop in props:
        if prop not in cnn_config.property_names:
            raise PipelineError(f"{models_dir}: the run that trains these ensembles has no {prop} property (it has "
                                f"{', '.join(cnn_config.property_names)}); leave {prop} out of monitor_classifiers")
        score = stage2_ensemble(prop, cnn_config, device)
        if score is not None:
            out[prop] = score
        elif left_out_for_scarce_labels(cnn_config, prop):
            log(f"monitor: no {prop} ensemble in {models_dir}; not monitored")
        else:
            raise _not_found(model_path(models_dir, prop, 0), prop)
    return out


def load_classifiers(config: FineTuneConfig, log: Callable[[str], None] = print,
                     device: str | None = None) -> dict[str, Classifier]:
    """The config's monitor_classifiers from classifier_models_dir (device None: the config's)."""
    if not config.monitor_classifiers:
        return {}
    return ensemble_classifiers(classifier_config(config), config.monitor_classifiers,
                                config.device if device is None else device, log)


def load_geometry(log: Callable[[str], None] = print):
    """The landmark model of the variety monitor, or None (logged) where its packages are missing."""
    try:
        from segmentation.face_geometry import FaceGeometry

        return FaceGeometry()
    except (PipelineError, ImportError, RuntimeError) as exc:
        log(f"monitor: landmark model not available ({exc}); variety without the geometric SDs")
        return None
