"""Stage 2's settings (section [cnn], and [v8_dataset.cnn] for stage 7): inputs, the properties table, training,
the keep rule and where the outputs go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnn.annotate import AnnotatorThresholds
from cnn.models import SUPPORTED_RESOLUTIONS, build_property_cnn
from cnn.properties import PropertyRule, parse_property_rules
from cnn.training import TrainSettings
from common import artifacts
from common.config import check_choices
from common.devices import DEVICE_HELP, check_device_name, choose_device
from common.errors import PipelineError
from common.paths import resolve_repo_path
from common.training_loop import TrainingSettings


LINK_MODES = ("copy", "hardlink")


@dataclass
class CnnConfig(TrainingSettings, width_multiplier=0.25, learning_rate=1e-3, max_epochs=10):
    """Section [cnn] of a profile (and [v8_dataset.cnn] over it); the training fields are common/training_loop.py's
    TrainingSettings."""

    profile: str = "embedded"
    resolution: int = field(default=64, metadata={"choices": SUPPORTED_RESOLUTIONS,
                                                "help": "image size of the stage-1 images"})
    images_dir: str = artifacts.FACES.images
    labels_csv: str = field(default=artifacts.FACES.labels_csv,
                            metadata={"help": "labels: the id column and one 0/1 column per property"})
    label_id_column: str = field(default="img_name", metadata={"help": "image number column of the labels file"})
    properties: dict = field(default_factory=lambda: {
        "gender": {"restart_loss": 0.35, "metric_threshold": 0.5, "keep_min": 0.7},
        "quality": {"stratified": True, "restart_loss": 0.13, "metric_threshold": 0.9, "keep_min": 0.9}}, metadata={
        "help": "JSON table: property -> its settings (see cnn/properties.py)"})
    keep_labelled: bool = field(default=True, metadata={
        "help": "labelled images may be kept (stage 2); false excludes them (the v8 dataset)"})
    num_labelled: int = field(default=2000, metadata={"help": "how many of the first images the annotator labels"})
    annotate: bool = field(default=True, metadata={"help": "write missing labels with the bundled annotator"})
    annotator_min_face_probability: float = 0.8
    annotator_min_eye_distance_ratio: float = 0.2
    annotator_min_strip_sharpness: float = 0.55
    annotator_female_threshold: float = 0.5
    annotator_old_age: float = 48.0
    annotator_glasses_threshold: float = field(default=-1.0, metadata={
        "help": "glasses probability for glass = 1; < 0 uses the threshold stored with cnn/glasses_model.pt"})
    models_dir: str = artifacts.FACES.cnn_models
    log_dir: str = artifacts.FACES.cnn_log
    inference_dir: str = artifacts.FACES.cnn_inference
    all_scores_csv: str = artifacts.FACES.cnn_scores_csv
    report_grid: str = artifacts.FACES.cnn_report_grid
    filtered_dir: str = artifacts.FACES.filtered
    link_mode: str = field(default="copy", metadata={"choices": LINK_MODES, "help": "copy or hardlink the kept images"})
    num_folds: int = 5
    augment_flip: bool = field(default=True, metadata={"help": "mirror half of each training batch"})
    channels_last: bool = field(default=True, metadata={"help": "NHWC training (faster on CPU, not bit-equal)"})
    max_restarts: int = field(default=0, metadata={"help": "cap on the restart rule's retrainings per fold"})
    funnel_png: str = artifacts.FACES.cnn_funnel
    skip_scarce_properties: bool = field(default=False, metadata={
        "help": "leave out (logged, no keep rule) a property whose rarer class has fewer labelled images than "
                "num_folds, instead of stopping the stage"})
    audit_kept: int = field(default=0, metadata={
        "help": "annotate a seeded sample of this many kept images and report the annotator's fractions in the "
                "funnel (a check of the filter; 0: off)"})
    fold_workers: int = field(default=2, metadata={
        "help": "train this many folds at once in worker processes (each with num_threads threads); the models "
                "are the same as one at a time"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})

    def validate(self) -> None:
        check_device_name(self.device, "[cnn] device")
        check_choices(self, "cnn")
        self.check_training("cnn")
        if self.num_labelled < 1:
            raise PipelineError(f"[cnn] num_labelled must be >= 1, got {self.num_labelled}")
        if self.fold_workers < 1:
            raise PipelineError(f"[cnn] fold_workers must be >= 1, got {self.fold_workers}")
        if self.num_folds < 2:
            raise PipelineError(f"[cnn] num_folds must be >= 2, got {self.num_folds}")
        if self.max_restarts < 0:
            raise PipelineError(f"[cnn] max_restarts must be >= 0, got {self.max_restarts}")
        self.rules()  # a bad properties table fails here, before any work

    def rules(self) -> list[PropertyRule]:
        return parse_property_rules(self.properties)

    def rule(self, prop: str) -> PropertyRule:
        return next(r for r in self.rules() if r.name == prop)

    @property
    def property_names(self) -> list[str]:
        return [r.name for r in self.rules()]

    def thresholds(self) -> AnnotatorThresholds:
        return AnnotatorThresholds(
            min_face_probability=self.annotator_min_face_probability,
            min_eye_distance_ratio=self.annotator_min_eye_distance_ratio,
            min_strip_sharpness=self.annotator_min_strip_sharpness,
            female_threshold=self.annotator_female_threshold, old_age=self.annotator_old_age,
            glasses_threshold=self.annotator_glasses_threshold)

    def train_settings(self, prop: str) -> TrainSettings:
        rule = self.rule(prop)
        return TrainSettings(
            resolution=self.resolution, width_multiplier=self.width_multiplier,
            learning_rate=rule.learning_rate if rule.learning_rate is not None else self.learning_rate,
            train_batch_size=self.train_batch_size, eval_batch_size=self.eval_batch_size,
            max_epochs=self.max_epochs, patience=self.patience, cosine_t_max=self.cosine_t_max,
            max_restarts=self.max_restarts, restart_loss=rule.restart_loss,
            metric_threshold=rule.metric_threshold, num_folds=self.num_folds, seed=self.seed,
            augment_flip=self.augment_flip, channels_last=self.channels_last,
            device=str(choose_device(self.device)))

    def build_model(self, prop: str) -> torch.nn.Module:
        return build_property_cnn(prop, self.resolution, self.width_multiplier, self.rule(prop).architecture)

    def path(self, name: str) -> Path:
        return resolve_repo_path(getattr(self, name))
