"""A check of the filter: the annotator's label fractions on a seeded sample of the kept images (audit_kept)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cnn.annotate import LABEL_COLUMNS, FaceAnnotator
from cnn.config import CnnConfig
from common.errors import log_line
from common.fileio import atomic_write_csv, load_images

AUDIT_NAMES = {"gender": "female", "quality": "good quality", "age": "old", "glass": "glasses"}


def audit_kept_images(config: CnnConfig, kept_images: pd.DataFrame, log=log_line) -> dict[str, float]:
    """The annotator's fractions (female, good quality, old, glasses) on a seeded sample of the kept images,
    written to `{log_dir}/kept_audit.csv`; a re-run with the same sample reads that file instead."""
    count = min(config.audit_kept, len(kept_images))
    if count == 0:
        return {}
    rng = np.random.default_rng([config.seed, 7])
    chosen = kept_images.iloc[np.sort(rng.choice(len(kept_images), count, replace=False))]
    path = config.path("log_dir") / "kept_audit.csv"
    audit = pd.read_csv(path) if path.is_file() else None
    if audit is None or audit["img_no"].tolist() != chosen["img_no"].tolist():
        log(f"annotating {count} of the {len(kept_images)} kept images (audit_kept)")
        pixels = load_images(list(chosen["path"]), config.resolution)
        labels = FaceAnnotator(config.thresholds()).annotate(list(pixels))[list(LABEL_COLUMNS)]
        audit = pd.concat([pd.DataFrame({"img_no": chosen["img_no"].to_numpy()}), labels], axis=1)
        atomic_write_csv(audit, path, index=False)
    return {"sample": float(count), **{AUDIT_NAMES.get(c, c): round(float(audit[c].mean()), 4) for c in LABEL_COLUMNS}}
