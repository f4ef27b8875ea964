"""The [vectorfind] config section (stages 8-9): sampling, SVM directions, evaluation, comparisons."""

from __future__ import annotations

from dataclasses import dataclass, field

from common import artifacts
from common.config import check_choices
from common.devices import DEVICE_HELP, check_device_name
from common.errors import PipelineError

ORIENTATIONS = ("more", "original")
DIRECTION_KINDS = ("plain", "conditional")
MEDIAN_SOURCES = ("sample", "separate")
EDIT_UNITS = ("w", "sd")
LABEL_SOURCES = ("cnn", "landmarks")
POSE_MEASURES = ("yaw", "roll")
DIRECTION_METHODS = ("svm", "ridge")


@dataclass
class VectorFindConfig:
    profile: str = "embedded"
    generator: str = field(default="", metadata={
        "help": "generator checkpoint; empty = FineTune-v8, else FineTune-v1, else the profile's [generator] base"})
    property_cnn: str = artifacts.MERGED_CNN
    output_dir: str = artifacts.VECTORFIND
    medians_dir: str = field(default=artifacts.VECTORFIND_MEDIANS, metadata={
        "help": "property_scores_{sampled,mean_and_median}.csv (the grouping medians)"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    num_threads: int = field(default=2, metadata={"help": "torch CPU threads (0 = torch's default)"})
    seed: int = field(default=0, metadata={"help": "sample i's latent depends on (seed, i) only"})
    num_samples: int = 40000
    shard_size: int = field(default=2000, metadata={"help": "samples per shard file (the unit of resume)"})
    batch_size: int = field(default=256, metadata={"help": "generator/CNN batch; results do not depend on it"})
    median_source: str = field(default="sample", metadata={"choices": MEDIAN_SOURCES,
        "help": "sample: medians of the sampled scores; separate: a separate run of median_samples latents"})
    median_samples: int = 20000
    median_seed: int = 1
    label_source: str = field(default="landmarks", metadata={"choices": LABEL_SOURCES,
        "help": "what the eyes/mouth/pose SVMs learn from: cnn (the merged property CNN's scores of every sample) "
                "or landmarks (eye opening, mouth opening and pose_measure from 68 landmarks on the first "
                "landmark_samples samples, one direction per property for all groups)"})
    landmark_samples: int = field(default=8000, metadata={
        "help": "samples measured by landmarks (rounded up to whole shards): for label_source = landmarks"})
    pose_measure: str = field(default="yaw", metadata={"choices": POSE_MEASURES,
        "help": "the landmark measure of pose: yaw or roll (labels and the landmark grading)"})
    landmark_workers: int = field(default=2, metadata={
        "help": "processes that measure landmarks (one face ~20 ms of one core)"})
    landmark_cases: int = field(default=30, metadata={
        "help": "evaluated cases whose saved images are re-measured by landmarks (0 = none)"})
    top_ratio: float = field(default=0.2, metadata={"help": "per group, the top and bottom k = ratio x size"})
    train_fraction: float = 0.8
    split_seed: int = field(default=2025, metadata={"help": "seeds the per-class train/validation shuffle"})
    svm_random_state: int = 2025
    svm_jobs: int = field(default=1, metadata={"help": "SVMs fitted in parallel (joblib processes)"})
    orientation: str = field(default="more", metadata={"choices": ORIENTATIONS,
        "help": "more: adding a vector increases the property; original: towards smaller (the original's sign)"})
    direction_method: str = field(default="ridge", metadata={"choices": DIRECTION_METHODS,
        "help": "how each target direction is fitted: svm (the original: LinearSVC normal between the top and bottom "
                "top_ratio) or ridge (ridge-regression gradient of the score on w over every labelled sample)"})
    direction_kind: str = field(default="conditional", metadata={"choices": DIRECTION_KINDS,
        "help": "which set goes to property_score_vectors/: plain SVM normals or conditional (projected)"})
    edit_layers: str = field(default="0-5", metadata={"help": "empty = all layers, or a range such as 0-7"})
    edit_unit: str = field(default="w", metadata={"choices": EDIT_UNITS,
        "help": "w: grid weights are w-space lengths (the original); sd: multiples of the sample's SD along each vector"})
    edit_scale: float = field(default=1.0, metadata={"help": "multiplies every grid weight"})
    eyes_edit_scale: float = field(default=2.0, metadata={"help": "multiplies the eyes grid weights (x edit_scale)"})
    mouth_edit_scale: float = field(default=1.0, metadata={"help": "multiplies the mouth grid weights (x edit_scale)"})
    pose_edit_scale: float = field(default=1.0, metadata={"help": "multiplies the pose grid weights (x edit_scale)"})
    eval_cases: int = 100
    eval_seed: int = 8
    eval_batch_size: int = field(default=400, metadata={"help": "edited images per generator batch"})
    eyes_threshold: float = 0.92
    mouth_threshold: float = 0.88
    pose_threshold: float = 0.88
    stop_after_passes: int = field(default=0, metadata={"help": "stop once this many cases passed (0 = never)"})
    save_images: bool = field(default=True, metadata={"help": "save every edited image as PNG"})
    png_check_cases: int = field(default=5, metadata={"help": "cases whose saved PNGs are re-scored"})
    compare_cases: int = field(default=10, metadata={
        "help": "cases per variant (plain/conditional x all layers/edit range) in the leakage comparison"})
    compare_layers: str = field(default="0-5", metadata={"help": "layer range compared with all layers"})
    strip_weights: int = field(default=9, metadata={"help": "images per property strip (weights -2..+2)"})

    def validate(self) -> None:
        check_choices(self, "vectorfind")
        check_device_name(self.device, "[vectorfind] device")
        for name in ("edit_scale", "eyes_edit_scale", "mouth_edit_scale", "pose_edit_scale"):
            if not getattr(self, name) > 0:
                raise PipelineError(f"[vectorfind] {name} must be > 0, got {getattr(self, name)}")
        for name in ("num_samples", "shard_size", "batch_size", "eval_batch_size", "median_samples", "landmark_samples"):
            if getattr(self, name) < 1:
                raise PipelineError(f"[vectorfind] {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.top_ratio <= 0.5:
            raise PipelineError(f"[vectorfind] top_ratio must be in (0, 0.5], got {self.top_ratio}")
        if not 0.0 < self.train_fraction < 1.0:
            raise PipelineError(f"[vectorfind] train_fraction must be in (0, 1), got {self.train_fraction}")
        parse_layer_range(self.edit_layers)
        parse_layer_range(self.compare_layers)

    @property
    def edit_scales(self) -> dict[str, float]:
        """Grid-weight multiplier per target property (edit_scale x the property's own)."""
        return {"eyes": self.edit_scale * self.eyes_edit_scale, "mouth": self.edit_scale * self.mouth_edit_scale,
                "pose": self.edit_scale * self.pose_edit_scale}

    @property
    def thresholds(self) -> dict[str, float]:
        return {"eyes": self.eyes_threshold, "mouth": self.mouth_threshold, "pose": self.pose_threshold}


def parse_layer_range(text: str) -> tuple[int, int] | None:
    """'' -> None (all layers); '0-7' -> (0, 7) inclusive; '3' -> (3, 3)."""
    text = text.strip()
    if not text:
        return None
    parts = text.split("-")
    try:
        first, last = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        first = last = None
    if first is None or last is None or first < 0 or last < first:
        raise PipelineError(f"layer range {text!r} must look like 0-7 (first <= last, both >= 0)")
    return first, last
