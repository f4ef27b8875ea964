"""Stage 6's settings (one config section per version: run_stylegan_fine_tuning.py) and FineTune-v1's condition vector."""

from __future__ import annotations

from dataclasses import dataclass, field

from common import artifacts
from common.config import check_choices
from common.devices import DEVICE_HELP, check_device_name
from common.errors import PipelineError
from stylegan.gan_trainer import W_SPREAD_KINDS
from stylegan.generate import GENERATOR_ENTRIES

# The condition vector, in the original's order (FineTune-v1).
PROPERTY_COLUMNS = ("eyes_score", "hair_color_score", "hair_length_score", "mouth_score", "pose_score",
                    "background_mean_score", "background_std_score")
LABEL_SIZE = len(PROPERTY_COLUMNS)
VERSIONS = ("v1", "v8")
DENSE0_INITS = ("fresh", "pretrained")
FAKE_LABELS = ("real", "normal")
W_SPREAD_LABELS = ("zeros", "normal")


LABEL_SOURCES = ("v2", "v1", "zeros")


@dataclass
class FineTuneConfig:
    profile: str = "embedded"
    version: str = field(default="v1", metadata={"choices": VERSIONS, "help": "v1 (label-conditioned from the base) or v8"})
    resolution: int = 64
    z_space_dim: int = 512
    w_space_dim: int = 512
    mapping_layers: int = 8
    mapping_fmaps: int = 512
    fmaps_base: int = 4096
    fmaps_max: int = 128
    minibatch_std_group_size: int = 16
    init_checkpoint: str = field(default=artifacts.EMBEDDED_GENERATOR, metadata={
        "help": "v1: the unconditioned base (GenForce layout); v8: v1's generator file"})
    init_entry: str = field(default="generator_smooth", metadata={"choices": GENERATOR_ENTRIES, "help": "generator or generator_smooth"})
    init_discriminator: str = field(default="", metadata={
        "help": "file holding D ('' = the discriminator entry of init_checkpoint); v8: v1's D file"})
    dense0_init: str = field(default="pretrained", metadata={"choices": DENSE0_INITS,
        "help": "v1: fresh (the original: dense0 re-initialised) or pretrained (z columns kept, label columns 0)"})
    images_dir: str = artifacts.FACES.filtered
    labels: str = field(default="v2", metadata={"choices": LABEL_SOURCES, "help": (
        "the real images' labels: stage 4's v2 or v1 scores (img_no + the 7 score columns), or zeros (all-zero "
        "labels: v8, as the original)")})
    labels_csv: str = field(default="", metadata={
        "help": "a score CSV of your own (img_no + the 7 score columns) instead of the stage-4 table `labels` names "
                "(not with labels = zeros)"})
    fake_labels: str = field(default="real", metadata={"choices": FAKE_LABELS, "help": "labels of the fakes: real (the real batch's) or normal"})
    trainable_generator: list[str] = field(default_factory=lambda: ["mapping"])
    trainable_discriminator: list[str] = field(default_factory=lambda: ["layer8", "layer9", "layer10"])
    batch_size: int = 8
    learning_rate: float = 2e-3
    mapping_lr_scale: float = field(default=10.0, metadata={
        "help": "lr multiplier for the mapping's dense layers (their equalised lr_mul 0.01 makes them slow)"})
    mapping_bias_lr_scale: float = field(default=10.0, metadata={
        "help": "extra lr multiplier (on top of mapping_lr_scale) for the mapping's biases: how fast the mean of w moves"})
    weight_decay: float = 0.0
    r1_gamma: float = 10.0
    r1_interval: int = field(default=8, metadata={"help": "R1 every N D steps, weighted by N (1 = the original)"})
    w_spread_weight: float = field(default=10.0, metadata={
        "help": "weight of the w-spread term in the G loss (0: off): spread of w on fixed latents vs the start's"})
    w_spread_kind: str = field(default="centred", metadata={"choices": W_SPREAD_KINDS,
        "help": "sd (per-dim SD), pairwise (pairwise distances) or centred (offsets from the mean; only a shift free)"})
    w_spread_samples: int = field(default=128, metadata={"help": "fixed latents of the w-spread term"})
    w_spread_labels: str = field(default="zeros", metadata={"choices": W_SPREAD_LABELS,
        "help": "labels of the w-spread latents: zeros (the label response stays free) or normal (N(0, 1))"})
    max_g_steps: int = 4
    g_loss_ratio: float = 2.0
    style_mixing_prob: float = 0.0
    w_moving_decay: float = 0.995
    randomize_noise: bool = True
    ema_half_life_images: float = 1000.0
    cosine_t_max: int = field(default=0, metadata={"help": "0: constant lr; > 0: cosine schedule stepped per epoch"})
    max_steps: int = field(default=400, metadata={"help": "total D steps of the run (resumes count)"})
    max_minutes: float = field(default=8.0, metadata={
        "help": "stop (and export) after this much time, previews and monitor included (0: no limit)"})
    seed: int = 0
    num_threads: int = field(default=2, metadata={"help": "torch CPU threads (0: torch's default)"})
    channels_last: bool = True
    log_every: int = 10
    checkpoint_every: int = 20
    preview_num_z: int = 8
    monitor_every: int = field(default=20, metadata={"help": "score fixed samples every N steps (0: off)"})
    monitor_samples: int = 100
    monitor_variety: bool = field(default=True, metadata={
        "help": "monitor the variety figures (geometric SDs by the landmark model, sharpness, pixel diversity)"})
    monitor_classifiers: list[str] = field(default_factory=lambda: ["gender", "quality"])
    classifier_models_dir: str = field(default=artifacts.FACES.cnn_models, metadata={
        "help": "folder of the monitor's {prop}_model_{k}.pt ensembles (stage 2 layout)"})
    property_cnn: str = field(default="", metadata={
        "help": "7-output property CNN for --evaluate: Pearson r of requested label vs its reading ('' = skip)"})
    run_dir: str = artifacts.FINE_TUNE["v1"].run_dir
    export_generator: str = artifacts.FINE_TUNE["v1"].generator
    export_discriminator: str = artifacts.FINE_TUNE["v1"].discriminator
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})

    def validate(self) -> None:
        check_device_name(self.device, "[fine_tuning] device")
        if self.w_spread_weight < 0 or self.w_spread_samples < 2:
            raise PipelineError(f"[fine_tuning] w_spread_weight must be >= 0 and w_spread_samples >= 2, got "
                                f"{self.w_spread_weight} and {self.w_spread_samples}")
        for name in ("batch_size", "max_g_steps", "r1_interval", "log_every", "checkpoint_every", "max_steps"):
            if getattr(self, name) < 1:
                raise PipelineError(f"[fine_tuning] {name} must be >= 1, got {getattr(self, name)}")
        check_choices(self, "fine_tuning")
        if self.version == "v1" and not self.labels_path():
            raise PipelineError("[fine_tuning] v1 needs labels (v1 or v2: the stage-4 scores, or a labels_csv); "
                                "v8 trains with zero labels")

    def labels_path(self) -> str:
        """The score CSV the real images' labels come from ('' = all-zero labels)."""
        if self.labels == "zeros":
            return ""
        return self.labels_csv or artifacts.FACES.scores_csv(self.labels)

    def generator_kwargs(self, label_size: int = LABEL_SIZE) -> dict:
        return dict(resolution=self.resolution, z_space_dim=self.z_space_dim, w_space_dim=self.w_space_dim,
                    mapping_layers=self.mapping_layers, mapping_fmaps=self.mapping_fmaps, fmaps_base=self.fmaps_base,
                    fmaps_max=self.fmaps_max, label_size=label_size)

    def discriminator_kwargs(self, label_size: int = LABEL_SIZE) -> dict:
        return dict(resolution=self.resolution, fmaps_base=self.fmaps_base, fmaps_max=self.fmaps_max,
                    label_size=label_size,
                    minibatch_std_group_size=self.minibatch_std_group_size if label_size else 4)
