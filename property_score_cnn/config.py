"""Stage 5's settings (section [property_cnn]): the scores and images the CNNs learn from, their training, and
where the model files, logs and predictions go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common import artifacts
from common.config import check_choices
from common.devices import DEVICE_HELP, check_device_name, choose_device
from common.errors import PipelineError
from common.paths import resolve_repo_path
from common.training_loop import LoopSettings, TrainingSettings
from property_score_cnn.models import SUPPORTED_RESOLUTIONS

MODEL_CHOICES = ("seven", "hairstyle", "merged")
# --model picks the run of [property_cnn]: the hairstyle CNN is the named run `hairstyle` ([hairstyle.property_cnn]
# and its input paths, common/artifacts.py STAGE_PATHS, over [property_cnn]); merged builds on both runs' files.
MODEL_STAGES = {"seven": None, "hairstyle": "hairstyle", "merged": None}
LR_SCHEDULES = ("cosine", "exponential")


@dataclass
class PropertyCnnConfig(TrainingSettings, width_multiplier=0.5, learning_rate=5e-4, max_epochs=12, cosine_t_max=12):
    """Section [property_cnn] of a profile: the 7-output CNN's run, and with [hairstyle.property_cnn] over it the
    hairstyle CNN's; the training fields are common/training_loop.py's TrainingSettings."""

    profile: str = "embedded"
    resolution: int = field(default=64, metadata={"choices": SUPPORTED_RESOLUTIONS,
                                                "help": "image size of the generator's images"})
    scores_csv: str = field(default=artifacts.FACES.scores_csv("v2"), metadata={
        "help": "stage 4's scores the CNN learns (img_no + its *_score columns)"})
    images_dir: str = field(default=artifacts.FACES.filtered, metadata={
        "help": "folder of the generator's images {img_no:06d}.png|jpg listed by scores_csv"})
    fallback_scores_csv: str = field(default="", metadata={
        "help": "scores used when scores_csv does not exist (empty: none; the hairstyle run's: the stage-1 set's)"})
    fallback_images_dir: str = field(default="", metadata={"help": "the images fallback_scores_csv lists"})
    models_dir: str = artifacts.PROPERTY_CNN_MODELS
    seven_model: str = field(default=artifacts.SEVEN_CNN_FILE, metadata={
        "help": "7-output CNN file in models_dir (the original's name)"})
    hairstyle_model: str = artifacts.HAIRSTYLE_CNN_FILE
    merged_model: str = artifacts.MERGED_CNN_FILE
    log_dir: str = artifacts.PROPERTY_CNN_LOGS
    predictions_csv: str = artifacts.SEVEN_CNN_PREDICTIONS
    compare_csv: str = artifacts.SEVEN_CNN_COMPARE
    val_fraction: float = 0.1
    lr_schedule: str = field(default="cosine", metadata={
        "help": "learning rate per epoch: cosine (decay to 0 over cosine_t_max epochs) or exponential (x lr_gamma)",
        "choices": LR_SCHEDULES})
    lr_gamma: float = field(default=0.95, metadata={"help": "ExponentialLR factor per epoch (lr_schedule exponential)"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})

    def validate(self) -> None:
        check_device_name(self.device, "[property_cnn] device")
        check_choices(self, "property_cnn")
        self.check_training("property_cnn")
        if not 0 < self.val_fraction < 1:
            raise PipelineError(f"[property_cnn] val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr_gamma <= 0:
            raise PipelineError(f"[property_cnn] lr_gamma must be > 0, got {self.lr_gamma}")

    def path(self, name: str) -> Path:
        return resolve_repo_path(getattr(self, name))

    def model_path(self, kind: str) -> Path:
        return self.path("models_dir") / getattr(self, f"{kind}_model")

    def source(self) -> tuple[Path, Path]:
        """(scores CSV, images folder) the CNN learns from: scores_csv's, else the fallback's where one is given
        (the hairstyle run: the v8 dataset's scores when they exist, else the stage-1 filtered set's)."""
        primary = self.path("scores_csv")
        if primary.is_file() or not self.fallback_scores_csv:
            return primary, self.path("images_dir")
        return self.path("fallback_scores_csv"), self.path("fallback_images_dir")

    def loop_settings(self) -> LoopSettings:
        return LoopSettings(learning_rate=self.learning_rate, train_batch_size=self.train_batch_size,
                            eval_batch_size=self.eval_batch_size, max_epochs=self.max_epochs, patience=self.patience,
                            seed=self.seed, device=str(choose_device(self.device)))

