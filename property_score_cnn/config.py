"""Stage 5's settings (section [property_cnn]): the scores and images the CNNs learn from, their training, and
where the model files, logs and predictions go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common import artifacts
from common.devices import DEVICE_HELP, check_device_name, choose_device
from common.errors import PipelineError
from common.paths import resolve_repo_path
from common.training_loop import LoopSettings
from property_score_cnn.models import SUPPORTED_RESOLUTIONS

MODEL_CHOICES = ("seven", "hairstyle", "merged")


@dataclass
class PropertyCnnConfig:
    """Section [property_cnn] of a profile."""

    profile: str = "embedded"
    resolution: int = field(default=64, metadata={"help": "image size of the generator's images (64, 128, 256)"})
    scores_csv: str = field(default=artifacts.FACES.scores_csv("v2"), metadata={
        "help": "stage 4's v2 scores (img_no + the 7 *_score columns) the 7-output CNN learns"})
    images_dir: str = field(default=artifacts.FACES.filtered, metadata={
        "help": "folder of the generator's images {img_no:06d}.png|jpg listed by scores_csv"})
    hairstyle_scores_csv: str = field(default=artifacts.V8_FACES.scores_csv("hairstyle"),
                                      metadata={"help": "hairstyle scores of the v8 dataset (used if present)"})
    hairstyle_images_dir: str = artifacts.V8_FACES.filtered
    fallback_hairstyle_scores_csv: str = field(
        default=artifacts.FACES.scores_csv("hairstyle"),
        metadata={"help": "hairstyle scores used when hairstyle_scores_csv does not exist (stage-1 filtered set)"})
    fallback_hairstyle_images_dir: str = artifacts.FACES.filtered
    models_dir: str = artifacts.PROPERTY_CNN_MODELS
    seven_model: str = field(default=artifacts.SEVEN_CNN_FILE, metadata={
        "help": "7-output CNN file in models_dir (the original's name)"})
    hairstyle_model: str = artifacts.HAIRSTYLE_CNN_FILE
    merged_model: str = artifacts.MERGED_CNN_FILE
    log_dir: str = artifacts.PROPERTY_CNN_LOGS
    predictions_csv: str = artifacts.SEVEN_CNN_PREDICTIONS
    compare_csv: str = artifacts.SEVEN_CNN_COMPARE
    seed: int = field(default=0, metadata={"help": "seeds the 90/10 split, initialisation and batch order"})
    val_fraction: float = 0.1
    width_multiplier: float = field(default=1.0, metadata={"help": "scales every conv's channels (7-output CNN)"})
    learning_rate: float = 5e-5
    train_batch_size: int = 16
    eval_batch_size: int = 64
    max_epochs: int = field(default=1000, metadata={"help": "epoch cap (the original had none)"})
    patience: int = field(default=20, metadata={"help": "early stopping: epochs without a better criterion"})
    cosine_t_max: int = 10
    hairstyle_width_multiplier: float = 1.0
    hairstyle_learning_rate: float = 5e-5
    hairstyle_max_epochs: int = 1000
    hairstyle_patience: int = 45
    hairstyle_lr_gamma: float = field(default=0.95, metadata={"help": "ExponentialLR factor per epoch"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})

    def validate(self) -> None:
        check_device_name(self.device, "[property_cnn] device")
        if self.resolution not in SUPPORTED_RESOLUTIONS:
            raise PipelineError(f"[property_cnn] resolution must be one of "
                                f"{', '.join(map(str, SUPPORTED_RESOLUTIONS))}, got {self.resolution}")
        for name in ("train_batch_size", "eval_batch_size", "max_epochs", "patience", "cosine_t_max",
                     "hairstyle_max_epochs", "hairstyle_patience"):
            if getattr(self, name) < 1:
                raise PipelineError(f"[property_cnn] {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise PipelineError(f"[property_cnn] val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("width_multiplier", "learning_rate", "hairstyle_width_multiplier", "hairstyle_learning_rate",
                     "hairstyle_lr_gamma"):
            if getattr(self, name) <= 0:
                raise PipelineError(f"[property_cnn] {name} must be > 0, got {getattr(self, name)}")

    def path(self, name: str) -> Path:
        return resolve_repo_path(getattr(self, name))

    def model_path(self, kind: str) -> Path:
        return self.path("models_dir") / getattr(self, f"{kind}_model")

    def loop_settings(self, kind: str) -> LoopSettings:
        prefix = "hairstyle_" if kind == "hairstyle" else ""
        return LoopSettings(learning_rate=getattr(self, f"{prefix}learning_rate"),
                            train_batch_size=self.train_batch_size, eval_batch_size=self.eval_batch_size,
                            max_epochs=getattr(self, f"{prefix}max_epochs"), patience=getattr(self, f"{prefix}patience"),
                            seed=self.seed, device=str(choose_device(self.device)))
