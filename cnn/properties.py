"""The binary properties a stage-2 run trains and filters on, read from the config's `properties` table.

Each entry of `[cnn] properties` (or `[v8_dataset.cnn] properties`) names one property and how it is
learned and used; every key is optional for the built-in properties (gender, quality, age, glass):

    label_column    column of the labels file (default: the property's name)
    stack, crop_256 the CNN: "gender" or "quality" stack on rows/cols [r0, r1, c0, c1) of the 256 px
    drop_last_pool  image (scaled with the resolution); required for a property that is not built in
    stratified      StratifiedKFold instead of KFold (default: quality only, as the original's stage 2)
    learning_rate   per-property learning rate (default: the section's)
    restart_loss    the restart rule's threshold on the minimum validation BCE
    metric_threshold  binarises scores for the logged metrics
    keep_min / keep_max  the keep rule: score >= keep_min and/or score <= keep_max
    init_from       a model file every fold starts from (fine-tuning)
    init_from_stage2_fold  N: start every fold from stage 2's fold-N model of the same property (the original's v8
                    filter began at fold 0); stands for init_from = that file

The defaults are the original's numbers (stage 2 and the v8 dataset's filter).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from cnn.models import ARCHITECTURES, STACKS, Architecture
from common import artifacts
from common.errors import PipelineError

# (restart_loss, metric_threshold) of the original: stage 2 (gender, quality) and stage 7 (age, glass)
ORIGINAL_THRESHOLDS = {"gender": (0.35, 0.5), "quality": (0.13, 0.9), "age": (0.23, 0.1), "glass": (0.10, 0.1)}
RULE_KEYS = ("label_column", "stack", "crop_256", "drop_last_pool", "stratified", "learning_rate", "restart_loss",
             "metric_threshold", "keep_min", "keep_max", "init_from", "init_from_stage2_fold")


@dataclass(frozen=True)
class PropertyRule:
    name: str
    label_column: str
    architecture: Architecture
    stratified: bool
    learning_rate: float | None
    restart_loss: float
    metric_threshold: float
    keep_min: float | None
    keep_max: float | None
    init_from: str

    def keep_text(self) -> str:
        parts = ([f"{self.name} >= {self.keep_min}"] if self.keep_min is not None else []) + \
                ([f"{self.name} <= {self.keep_max}"] if self.keep_max is not None else [])
        return " and ".join(parts) or f"{self.name}: any"


def seed_index(name: str) -> int:
    """A fixed number per property for its training seeds: the built-in ones keep stage 2's
    (gender 0, quality 1) whatever else a run trains; others get a stable number from the name."""
    builtin = list(ARCHITECTURES)
    return builtin.index(name) if name in builtin else len(builtin) + zlib.crc32(name.encode()) % 90


def _init_from(where: str, name: str, entry: dict) -> str:
    fold = entry.get("init_from_stage2_fold")
    if fold is None:
        return str(entry.get("init_from", ""))
    if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0 or "init_from" in entry:
        raise PipelineError(f"{where}: init_from_stage2_fold must be a fold number >= 0 (and not with init_from), "
                            f"got {fold!r}")
    return artifacts.fold_model(artifacts.FACES.cnn_models, name, fold)


def _number(where: str, key: str, value, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PipelineError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def parse_property_rules(table: dict, where: str = "[cnn] properties") -> list[PropertyRule]:
    """PropertyRule per entry, in the table's order; a bad entry is a one-line error naming it."""
    if not isinstance(table, dict) or not table:
        raise PipelineError(f"{where}: must be a table with one entry per property, e.g. "
                            "properties = {{ gender = {{ keep_min = 0.7 }}, quality = {{ keep_min = 0.9 }} }}")
    rules = []
    for name, entry in table.items():
        here = f"{where}.{name}"
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise PipelineError(f"{here}: must be a table of settings, got {entry!r}")
        unknown = sorted(set(entry) - set(RULE_KEYS))
        if unknown:
            raise PipelineError(f"{here}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(RULE_KEYS)}")
        if "stack" in entry or "crop_256" in entry:
            stack, crop = entry.get("stack"), entry.get("crop_256")
            if stack not in STACKS:
                raise PipelineError(f"{here}: stack must be one of {', '.join(STACKS)}, got {stack!r}")
            if (not isinstance(crop, (list, tuple)) or len(crop) != 4 or not all(isinstance(v, int) for v in crop)
                    or not (0 <= crop[0] < crop[1] <= 256 and 0 <= crop[2] < crop[3] <= 256)):
                raise PipelineError(f"{here}: crop_256 must be [row_start, row_end, col_start, col_end] inside "
                                    f"256x256, got {crop!r}")
            architecture = Architecture(stack, tuple(crop), bool(entry.get("drop_last_pool", False)))
        elif name in ARCHITECTURES:
            architecture = ARCHITECTURES[name]
        else:
            raise PipelineError(f"{here}: '{name}' is not a built-in property ({', '.join(ARCHITECTURES)}); "
                                "give its stack and crop_256")
        restart_default, metric_default = ORIGINAL_THRESHOLDS.get(name, (float("inf"), 0.5))
        rule = PropertyRule(
            name=name, label_column=str(entry.get("label_column", name)), architecture=architecture,
            stratified=bool(entry.get("stratified", name == "quality")),
            learning_rate=_number(here, "learning_rate", entry.get("learning_rate"), allow_none=True),
            restart_loss=_number(here, "restart_loss", entry.get("restart_loss", restart_default)),
            metric_threshold=_number(here, "metric_threshold", entry.get("metric_threshold", metric_default)),
            keep_min=_number(here, "keep_min", entry.get("keep_min"), allow_none=True),
            keep_max=_number(here, "keep_max", entry.get("keep_max"), allow_none=True),
            init_from=_init_from(here, name, entry))
        if rule.learning_rate is not None and rule.learning_rate <= 0:
            raise PipelineError(f"{here}: learning_rate must be > 0")
        rules.append(rule)
    columns = [r.label_column for r in rules]
    if len(set(columns)) != len(columns):
        raise PipelineError(f"{where}: two properties read the same label column")
    return rules
