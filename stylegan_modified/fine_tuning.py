"""Stage 6: conditional StyleGAN fine-tuning, FineTune-v1 and FineTune-v8.

* v1 turns the profile's unconditioned base into a 7-label conditional generator: `mapping.label_weight`
  [7, 16] is new (N(0, 1)), `mapping.dense0` takes z ++ embedding (re-initialised, its bias loaded), D's
  last dense layer takes its features ++ the label (re-initialised, bias loaded); every other weight comes
  from the base. Only `mapping.*` and D's last three layers train, on the stage-2 filtered images with their
  7 stage-4 scores as labels.
* v8 continues from v1's G and D (strict load) with all-zero labels on the v8 dataset, training
  `mapping.*`, the 4x4 block (`synthesis.layer0`, `layer1`, `output0`) and the same D layers, and
  monitors classifier ensembles on fixed samples.
* Both can hold the spread of w to the starting mapping's (`w_spread_weight`, `w_spread_kind`): on a fixed batch
  of latents the trainable mapping's w may shift its mean freely, while a change of its spread (per-dimension SD,
  pairwise distances, or each sample's offset from the mean) is penalised - the collapse of faces to one pose and
  expression starts as a collapse of w. The monitor logs the variety figures of stylegan/variety.py (geometric
  SDs, sharpness, pixel diversity) of the EMA generator's fixed samples next to the classifier scores.

The recipe is the original's (non-saturating loss, R1 gamma 10, one D step then G steps until the
G loss falls below 2 x the D loss, at most 4; AdamW 1e-4), with its defects fixed on purpose: style
mixing only if asked, the EMA generator updated and saved as `generator_smooth`, a cosine schedule
only if asked (and then stepped once per epoch), everything seeded and resumable, fake labels taken
from the real batch (as the original) or sampled N(0, 1).

Discriminator layer names: the original's `layer12-14` are the 4x4 block of the 256 px D
(minibatch-stddev conv, dense, the last dense). At any resolution they are `layer{2B-2}`,
`layer{2B-1}`, `layer{2B}` with B = log2(resolution) - 1 blocks, so `layer8-10` at 64 px.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from common.checkpoints import load_state_strict, read_weights, save_weights
from common.config import dump_config
from common.paths import repo_relative, resolve_repo_path
from common.devices import DEVICE_HELP, check_device_name, choose_device
from common.errors import PipelineError
from common.fileio import atomic_write_text, load_image, read_csv_checked
from common.images import save_grid, to_uint8
from stylegan.checkpoint import load_generator, read_checkpoint, save_checkpoint, select_entry
from stylegan.gan_trainer import (LOG_FILE, STATE_FILE, W_SPREAD_KINDS, append_log, trim_log, discriminator_step, ema_beta,
                                  frozen_requires_grad, generator_adversarial_loss, plot_log_curves, real_fake_auroc,
                                  restore_rng_state, rng_state, run_loop, update_ema, w_spread_penalty)
from stylegan.stylegan_discriminator import StyleGANDiscriminator
from stylegan.stylegan_generator import StyleGANGenerator
from stylegan.variety import FIGURE_KEYS, variety_figures

# The condition vector, in the original's order (FineTune-v1).
PROPERTY_COLUMNS = ("eyes_score", "hair_color_score", "hair_length_score", "mouth_score", "pose_score",
                    "background_mean_score", "background_std_score")
LABEL_SIZE = len(PROPERTY_COLUMNS)
VERSIONS = ("v1", "v8")
IMAGE_NAME = re.compile(r"^(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)

# A classifier maps uint8 images [N, 3, R, R] to one score per image (e.g. a stage-2 ensemble's mean).
Classifier = Callable[[torch.Tensor], np.ndarray]


@dataclass
class FineTuneConfig:
    profile: str = "embedded"
    version: str = field(default="v1", metadata={"help": "v1 (label-conditioned from the base) or v8"})
    resolution: int = 64
    z_space_dim: int = 512
    w_space_dim: int = 512
    mapping_layers: int = 8
    mapping_fmaps: int = 512
    fmaps_base: int = 4096
    fmaps_max: int = 128
    minibatch_std_group_size: int = 16
    init_checkpoint: str = field(default="stylegan/models/embedded_stylegan_64.pth", metadata={
        "help": "v1: the unconditioned base (GenForce layout); v8: v1's generator file"})
    init_entry: str = field(default="generator_smooth", metadata={"help": "generator or generator_smooth"})
    init_discriminator: str = field(default="", metadata={
        "help": "file holding D ('' = the discriminator entry of init_checkpoint); v8: v1's D file"})
    dense0_init: str = field(default="fresh", metadata={
        "help": "v1: fresh (the original: dense0 re-initialised) or pretrained (z columns kept, label columns 0)"})
    images_dir: str = "stylegan/synthesize_results_filtered"
    labels_csv: str = field(default="segmentation/property_score_results/all_scores_v2.csv", metadata={
        "help": "stage-4 scores (img_no + the 7 score columns); '' = all-zero labels (v8)"})
    fake_labels: str = field(default="real", metadata={"help": "labels of the fakes: real (the real batch's) or normal"})
    trainable_generator: list[str] = field(default_factory=lambda: ["mapping"])
    trainable_discriminator: list[str] = field(default_factory=lambda: ["layer8", "layer9", "layer10"])
    batch_size: int = 16
    learning_rate: float = 1e-4
    mapping_lr_scale: float = field(default=1.0, metadata={
        "help": "lr multiplier for the mapping's dense layers (their equalised lr_mul 0.01 makes them slow)"})
    mapping_bias_lr_scale: float = field(default=1.0, metadata={
        "help": "extra lr multiplier (on top of mapping_lr_scale) for the mapping's biases: how fast the mean of w moves"})
    weight_decay: float = 0.01
    r1_gamma: float = 10.0
    r1_interval: int = field(default=1, metadata={"help": "R1 every N D steps, weighted by N (1 = the original)"})
    w_spread_weight: float = field(default=0.0, metadata={
        "help": "weight of the w-spread term in the G loss (0: off): spread of w on fixed latents vs the start's"})
    w_spread_kind: str = field(default="centred", metadata={
        "help": "sd (per-dim SD), pairwise (pairwise distances) or centred (offsets from the mean; only a shift free)"})
    w_spread_samples: int = field(default=128, metadata={"help": "fixed latents of the w-spread term"})
    w_spread_labels: str = field(default="zeros", metadata={
        "help": "labels of the w-spread latents: zeros (the label response stays free) or normal (N(0, 1))"})
    max_g_steps: int = 4
    g_loss_ratio: float = 2.0
    style_mixing_prob: float = 0.0
    w_moving_decay: float = 0.995
    randomize_noise: bool = True
    ema_half_life_images: float = 10000.0
    cosine_t_max: int = field(default=0, metadata={"help": "0: constant lr; > 0: cosine schedule stepped per epoch"})
    max_steps: int = field(default=300, metadata={"help": "total D steps of the run (resumes count)"})
    max_minutes: float = field(default=0.0, metadata={
        "help": "stop (and export) after this much time, previews and monitor included (0: no limit)"})
    seed: int = 0
    num_threads: int = field(default=2, metadata={"help": "torch CPU threads (0: torch's default)"})
    channels_last: bool = True
    log_every: int = 10
    checkpoint_every: int = 50
    preview_num_z: int = 8
    monitor_every: int = field(default=50, metadata={"help": "score fixed samples every N steps (0: off)"})
    monitor_samples: int = 100
    monitor_variety: bool = field(default=True, metadata={
        "help": "monitor the variety figures (geometric SDs by the landmark model, sharpness, pixel diversity)"})
    monitor_classifiers: list[str] = field(default_factory=lambda: ["gender", "quality"])
    classifier_models_dir: str = field(default="cnn/models", metadata={
        "help": "folder of the monitor's {prop}_model_{k}.pt ensembles (stage 2 layout)"})
    property_cnn: str = field(default="", metadata={
        "help": "7-output property CNN for --evaluate: Pearson r of requested label vs its reading ('' = skip)"})
    run_dir: str = "runs/fine_tuning_v1"
    export_generator: str = "stylegan_modified/stylegan_gen_fine_tuned_v1.pth"
    export_discriminator: str = "stylegan_modified/stylegan_dis_fine_tuned_v1.pth"
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})

    def validate(self) -> None:
        check_device_name(self.device, "[fine_tuning] device")
        if self.version not in VERSIONS:
            raise PipelineError(f"[fine_tuning] version must be one of {', '.join(VERSIONS)}, got '{self.version}'")
        if self.init_entry not in ("generator", "generator_smooth"):
            raise PipelineError(f"[fine_tuning] init_entry must be generator or generator_smooth, got '{self.init_entry}'")
        if self.dense0_init not in ("fresh", "pretrained"):
            raise PipelineError(f"[fine_tuning] dense0_init must be fresh or pretrained, got '{self.dense0_init}'")
        if self.fake_labels not in ("real", "normal"):
            raise PipelineError(f"[fine_tuning] fake_labels must be real or normal, got '{self.fake_labels}'")
        if self.w_spread_kind not in W_SPREAD_KINDS:
            raise PipelineError(f"[fine_tuning] w_spread_kind must be one of {', '.join(W_SPREAD_KINDS)}, "
                                f"got '{self.w_spread_kind}'")
        if self.w_spread_labels not in ("zeros", "normal"):
            raise PipelineError(f"[fine_tuning] w_spread_labels must be zeros or normal, got '{self.w_spread_labels}'")
        if self.w_spread_weight < 0 or self.w_spread_samples < 2:
            raise PipelineError(f"[fine_tuning] w_spread_weight must be >= 0 and w_spread_samples >= 2, got "
                                f"{self.w_spread_weight} and {self.w_spread_samples}")
        for name in ("batch_size", "max_g_steps", "r1_interval", "log_every", "checkpoint_every", "max_steps"):
            if getattr(self, name) < 1:
                raise PipelineError(f"[fine_tuning] {name} must be >= 1, got {getattr(self, name)}")
        if self.version == "v1" and not self.labels_csv:
            raise PipelineError("[fine_tuning] v1 needs labels_csv (the stage-4 scores); v8 trains with zero labels")

    def generator_kwargs(self, label_size: int = LABEL_SIZE) -> dict:
        return dict(resolution=self.resolution, z_space_dim=self.z_space_dim, w_space_dim=self.w_space_dim,
                    mapping_layers=self.mapping_layers, mapping_fmaps=self.mapping_fmaps, fmaps_base=self.fmaps_base,
                    fmaps_max=self.fmaps_max, label_size=label_size)

    def discriminator_kwargs(self, label_size: int = LABEL_SIZE) -> dict:
        return dict(resolution=self.resolution, fmaps_base=self.fmaps_base, fmaps_max=self.fmaps_max,
                    label_size=label_size,
                    minibatch_std_group_size=self.minibatch_std_group_size if label_size else 4)


# --- data --------------------------------------------------------------------------------------
@dataclass
class FineTuneDataset:
    img_nos: np.ndarray  # [N] int64
    images: torch.Tensor  # [N, 3, R, R] uint8
    labels: torch.Tensor  # [N, LABEL_SIZE] float32

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.img_nos.astype(np.int64).tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


def list_images(images_dir: Path) -> dict[int, Path]:
    """{img_no: path} of the {img_no:06d}.png|jpg files in a folder."""
    if not images_dir.is_dir():
        raise PipelineError(f"{images_dir}: dataset folder not found; run the stages that fill it "
                            f"(v1: stages 1-2; v8: the v8 dataset, --stage v8_dataset) or pass --images-dir")
    found: dict[int, Path] = {}
    for path in sorted(images_dir.iterdir()):
        match = IMAGE_NAME.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    if not found:
        raise PipelineError(f"{images_dir}: no {{img_no:06d}}.png/.jpg images; run the stages that fill it")
    return found


def read_label_table(path: Path) -> pd.DataFrame:
    """img_no + the 7 property columns (float32) from a stage-4 scores CSV."""
    if not path.is_file():
        raise PipelineError(f"{path}: labels CSV not found; run compute_property_scores.py (stage 4) or pass "
                            f"--labels-csv")
    frame = read_csv_checked(path, "re-run compute_property_scores.py (stage 4)")
    missing = [c for c in ("img_no", *PROPERTY_COLUMNS) if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; expected img_no and "
                            f"{', '.join(PROPERTY_COLUMNS)} (stage 4's output)")
    frame = frame[["img_no", *PROPERTY_COLUMNS]].apply(pd.to_numeric, errors="coerce")  # text -> NaN, named below
    bad = ~np.isfinite(frame.to_numpy(np.float64)).all(axis=1)
    if bad.any():
        raise PipelineError(f"{path}: {int(bad.sum())} row(s) with empty, non-numeric or NaN values (first at row "
                            f"{int(np.flatnonzero(bad)[0]) + 2}); re-run stage 4")
    if frame["img_no"].duplicated().any():
        dup = int(frame.loc[frame["img_no"].duplicated(), "img_no"].iloc[0])
        raise PipelineError(f"{path}: img_no {dup} appears more than once; re-run stage 4")
    return frame.astype({"img_no": np.int64, **{c: np.float32 for c in PROPERTY_COLUMNS}})


def load_dataset(images_dir: str | Path, labels_csv: str | Path | None, resolution: int,
                 log: Callable[[str], None] = print) -> FineTuneDataset:
    """Images of `images_dir` with their labels. With a labels CSV every row must have its image
    ({img_no:06d}.png|jpg; the CSV's img_path names stage-3 crops, not these); images without a row
    are left out (stage 3/4 may skip faces). Without one, every image gets the all-zero label."""
    images_dir = resolve_repo_path(images_dir)
    available = list_images(images_dir)
    if labels_csv:
        labels_path = resolve_repo_path(labels_csv)
        table = read_label_table(labels_path)
        missing = [int(n) for n in table["img_no"] if int(n) not in available]
        if missing:
            raise PipelineError(f"{labels_path}: labels CSV does not match the images: {len(missing)} of {len(table)} "
                                f"rows have no image in {images_dir} (first: {missing[0]:06d}.png); run stages 2-4 on "
                                f"the same images or pass the matching --images-dir")
        unlabelled = len(available) - len(table)
        if unlabelled:
            log(f"{unlabelled} image(s) in {images_dir} have no row in {labels_path.name} and are not used")
        img_nos = table["img_no"].to_numpy()
        labels = torch.from_numpy(table[list(PROPERTY_COLUMNS)].to_numpy(np.float32))
    else:
        img_nos = np.array(sorted(available), np.int64)
        labels = torch.zeros(len(img_nos), LABEL_SIZE)
    images = torch.empty(len(img_nos), 3, resolution, resolution, dtype=torch.uint8)
    for i, img_no in enumerate(img_nos):
        path = available[int(img_no)]
        image = load_image(path)
        if image.shape != (resolution, resolution, 3):
            raise PipelineError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, the profile expects "
                                f"{resolution}x{resolution}; use the matching --profile or --resolution")
        images[i] = torch.from_numpy(image).permute(2, 0, 1)
    return FineTuneDataset(img_nos.astype(np.int64), images, labels)


# --- models ------------------------------------------------------------------------------------
def read_module_state(path: str | Path, entry: str) -> dict[str, torch.Tensor]:
    """`entry` of a GenForce-layout file, or the file itself when it is a plain state dict (the original's
    stylegan_*_fine_tuned_v*.pth were saved that way)."""
    state = read_weights(path)
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    return select_entry(read_checkpoint(path), entry, path)


def _float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def last_discriminator_layers(resolution: int) -> list[str]:
    """The original's `layer12-14` at any resolution: the 4x4 block's conv and dense, and the last dense."""
    blocks = int(math.log2(resolution)) - 1
    return [f"layer{2 * blocks - 2}", f"layer{2 * blocks - 1}", f"layer{2 * blocks}"]


def conditional_from_base(config: FineTuneConfig, generator_state: dict, discriminator_state: dict,
                          source: str) -> tuple[StyleGANGenerator, StyleGANDiscriminator]:
    """v1's starting point: the unconditioned weights (loaded strictly, so a wrong layout is one line)
    copied into the conditional layout; the new or widened tensors keep their fresh initialisation."""
    base_g = StyleGANGenerator(**config.generator_kwargs(label_size=0))
    load_state_strict(base_g, _float_state(generator_state), f"{source} [{config.init_entry}]")
    base_d = StyleGANDiscriminator(**config.discriminator_kwargs(label_size=0))
    load_state_strict(base_d, _float_state(discriminator_state), f"{source} [discriminator]")
    generator = StyleGANGenerator(**config.generator_kwargs())
    discriminator = StyleGANDiscriminator(**config.discriminator_kwargs())
    g_state = generator.state_dict()
    for key, value in base_g.state_dict().items():
        if key == "mapping.dense0.weight":
            if config.dense0_init == "pretrained":
                g_state[key][:, :config.z_space_dim] = value
                g_state[key][:, config.z_space_dim:] = 0.0
            continue
        g_state[key] = value
    generator.load_state_dict(g_state)
    d_state = discriminator.state_dict()
    last_dense = f"{last_discriminator_layers(config.resolution)[-1]}.weight"
    d_state.update({k: v for k, v in base_d.state_dict().items() if k != last_dense})
    discriminator.load_state_dict(d_state)
    return generator, discriminator


def build_models(config: FineTuneConfig) -> tuple[StyleGANGenerator, StyleGANDiscriminator]:
    torch.manual_seed(config.seed)  # the fresh tensors (label_weight, dense0, D's last dense) are seeded
    g_path = resolve_repo_path(config.init_checkpoint)
    d_path = resolve_repo_path(config.init_discriminator) if config.init_discriminator else g_path
    g_state = read_module_state(g_path, config.init_entry)
    d_state = read_module_state(d_path, "discriminator")
    if config.version == "v1":
        return conditional_from_base(config, g_state, d_state, str(g_path))
    generator = StyleGANGenerator(**config.generator_kwargs())
    load_state_strict(generator, _float_state(g_state), f"{g_path} [{config.init_entry}] (v8 starts from v1's G)")
    discriminator = StyleGANDiscriminator(**config.discriminator_kwargs())
    load_state_strict(discriminator, _float_state(d_state), f"{d_path} [discriminator] (v8 starts from v1's D)")
    return generator, discriminator


def select_trainable(module: nn.Module, names: list[str], what: str) -> list[str]:
    """Freeze everything but the parameters under the named sub-modules; returns the trainable names."""
    trainable = []
    for name, param in module.named_parameters():
        keep = any(name == n or name.startswith(n + ".") for n in names)
        param.requires_grad_(keep)
        if keep:
            trainable.append(name)
    params = [n for n, _ in module.named_parameters()]
    for n in names:
        if not any(p == n or p.startswith(n + ".") for p in params):
            tops = sorted({p.split(".")[0] for p in params}, key=lambda s: (len(s), s))
            raise PipelineError(f"[fine_tuning] trainable_{what}: '{n}' names no part of the {what} "
                                f"(top-level names: {', '.join(tops)})")
    return trainable


def preset_labels(strength: float = 2.0) -> torch.Tensor:
    """Preview rows: the all-zero label, then each property alone at +strength (in z-score units)."""
    return torch.cat([torch.zeros(1, LABEL_SIZE), strength * torch.eye(LABEL_SIZE)])


def generate_uint8(generator: StyleGANGenerator, z: torch.Tensor, labels: torch.Tensor, batch_size: int = 64,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N, 3, R, R] from an eval-mode generator (fixed noise, no mixing, no truncation)."""
    was_training = generator.training
    generator.eval()
    out = []
    with torch.inference_mode():
        for zb, lb in zip(z.split(batch_size), labels.split(batch_size)):
            image = generator(zb.to(device), lb.to(device) if generator.label_size else None)["image"]
            out.append(torch.from_numpy(to_uint8(image)).permute(0, 3, 1, 2))
    generator.train(was_training)
    return torch.cat(out)


# --- the trainer -------------------------------------------------------------------------------
class FineTuner:
    """Models, optimisers and RNG of one fine-tuning run; `step()` = one D step and its G steps."""

    def __init__(self, config: FineTuneConfig, dataset: FineTuneDataset,
                 classifiers: dict[str, Classifier] | None = None, device: str = "cpu", geometry=None):
        self.config = config
        self.dataset = dataset
        self.classifiers = classifiers or {}
        self.geometry = geometry  # FaceGeometry-like (measure(images) -> [N, 4]) or None: no geometric SDs
        self.device = torch.device(device)
        if len(dataset.img_nos) < config.batch_size:
            raise PipelineError(f"{config.images_dir}: {len(dataset.img_nos)} images, fewer than one batch "
                                f"({config.batch_size}); lower --batch-size or add images")
        self.generator, self.discriminator = build_models(config)
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        if config.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        self.generator_smooth = StyleGANGenerator(**config.generator_kwargs()).to(self.device)
        self.generator_smooth.load_state_dict(self.generator.state_dict())
        self.generator_smooth.eval().requires_grad_(False)
        # The w-spread term's fixed latents and their w under the starting mapping (recomputed from the same
        # starting files on a resume, so nothing of it is saved).
        spread = torch.Generator().manual_seed(config.seed + 999)
        self.spread_z = torch.randn(config.w_spread_samples, config.z_space_dim, generator=spread).to(self.device)
        self.spread_labels = torch.randn(config.w_spread_samples, LABEL_SIZE, generator=spread).to(self.device)
        if config.w_spread_labels == "zeros":
            self.spread_labels.zero_()
        with torch.no_grad():
            self.spread_ref = self.generator.mapping(self.spread_z, self.spread_labels).detach()
        self.g_trainable = select_trainable(self.generator, config.trainable_generator, "generator")
        self.d_trainable = select_trainable(self.discriminator, config.trainable_discriminator, "discriminator")
        named = [(n, p) for n, p in self.generator.named_parameters() if p.requires_grad]
        fast = [p for n, p in named if n.startswith("mapping.dense") and not n.endswith(".bias")]
        bias = [p for n, p in named if n.startswith("mapping.dense") and n.endswith(".bias")]
        other = [p for n, p in named if not n.startswith("mapping.dense")]
        mapping_lr = config.learning_rate * config.mapping_lr_scale
        groups = [g for g in ({"params": other}, {"params": fast, "lr": mapping_lr},
                              {"params": bias, "lr": mapping_lr * config.mapping_bias_lr_scale}) if g["params"]]
        self.g_optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.d_optimizer = torch.optim.AdamW([p for p in self.discriminator.parameters() if p.requires_grad],
                                             lr=config.learning_rate, weight_decay=config.weight_decay)
        self.schedulers = []
        if config.cosine_t_max > 0:
            self.schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.cosine_t_max)
                               for opt in (self.g_optimizer, self.d_optimizer)]
        self.rng = torch.Generator().manual_seed(config.seed)
        self.step_index = 0
        self.train_seconds = 0.0
        self.hook_seconds = 0.0  # previews and monitor: part of the time budget, not of the step time
        self.steps_per_epoch = len(dataset.img_nos) // config.batch_size
        self._order_epoch = -1
        self._order = torch.empty(0, dtype=torch.long)
        fixed = torch.Generator().manual_seed(config.seed + 777)
        self.preview_z = torch.randn(config.preview_num_z, config.z_space_dim, generator=fixed)
        self.monitor_z = torch.randn(config.monitor_samples, config.z_space_dim, generator=fixed)
        # As the original's v8 monitor (and the v8 dataset): label dims ~ N(0, 1).
        self.monitor_labels = torch.randn(config.monitor_samples, LABEL_SIZE, generator=fixed)

    # --- data order --------------------------------------------------------------------------
    def epoch_and_index(self, step: int) -> tuple[int, int]:
        return divmod(step, self.steps_per_epoch)

    def real_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `idx` of epoch `e` under a permutation seeded by (seed, e): resumable without saving it."""
        epoch, idx = self.epoch_and_index(step)
        if epoch != self._order_epoch:
            order_rng = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._order = torch.randperm(len(self.dataset.img_nos), generator=order_rng)
            self._order_epoch = epoch
        rows = self._order[idx * self.config.batch_size:(idx + 1) * self.config.batch_size]
        images = self.dataset.images[rows].to(self.device).float().div_(127.5).sub_(1.0)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, self.dataset.labels[rows].to(self.device)

    def _fake_labels(self, real_labels: torch.Tensor) -> torch.Tensor:
        if self.config.fake_labels == "real":
            return real_labels
        return torch.randn(real_labels.shape, generator=self.rng).to(self.device)

    def _fake(self, labels: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        z = torch.randn(labels.shape[0], cfg.z_space_dim, generator=self.rng).to(self.device)
        return self.generator(z, labels, w_moving_decay=cfg.w_moving_decay, style_mixing_prob=cfg.style_mixing_prob,
                              randomize_noise=cfg.randomize_noise)["image"]

    # --- one step ----------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        cfg = self.config
        start = time.perf_counter()
        epoch, idx = self.epoch_and_index(self.step_index)
        real, real_labels = self.real_batch(self.step_index)
        self.generator.train()
        self.discriminator.train()
        fake_labels = self._fake_labels(real_labels)
        with torch.no_grad():
            fake = self._fake(fake_labels)
        d = discriminator_step(self.discriminator, self.d_optimizer, real, fake, cfg.r1_gamma,
                               apply_r1=self.step_index % cfg.r1_interval == 0, r1_weight=cfg.r1_interval,
                               real_label=real_labels, fake_label=fake_labels)
        beta = ema_beta(cfg.batch_size, cfg.ema_half_life_images)
        g_losses = []
        with frozen_requires_grad(self.discriminator):
            while True:
                fake_labels = self._fake_labels(real_labels)
                g_loss = generator_adversarial_loss(self.discriminator(self._fake(fake_labels), fake_labels))
                loss = g_loss
                if cfg.w_spread_weight > 0:
                    spread = self.w_spread(self.generator)
                    loss = g_loss + cfg.w_spread_weight * spread
                self.g_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.g_optimizer.step()
                update_ema(self.generator_smooth, self.generator, beta)
                g_losses.append(float(g_loss.detach()))
                # The original's rule: keep training G while it is losing clearly (R1 included in the D loss).
                if g_losses[-1] < cfg.g_loss_ratio * d.total_loss or len(g_losses) >= cfg.max_g_steps:
                    break
        if self.schedulers and idx == self.steps_per_epoch - 1:
            for scheduler in self.schedulers:
                scheduler.step()
        self.step_index += 1
        self.train_seconds += time.perf_counter() - start
        stats = {"d_loss": d.total_loss, "d_adv_loss": d.adversarial_loss, "g_loss": g_losses[-1],
                 "g_train_count": float(len(g_losses)), "real_scores_mean": float(d.real_scores.mean()),
                 "fake_scores_mean": float(d.fake_scores.mean()),
                 "real_fake_auroc": real_fake_auroc(d.real_scores, d.fake_scores)}
        if d.r1 is not None:
            stats["r1"] = d.r1
        if cfg.w_spread_weight > 0:
            stats["w_spread"] = float(spread.detach())
        return stats

    def w_spread(self, generator: StyleGANGenerator) -> torch.Tensor:
        """The w-spread term of `generator`'s mapping on the fixed latents (0 at the start)."""
        w = generator.mapping(self.spread_z, self.spread_labels)
        return w_spread_penalty(w, self.spread_ref, self.config.w_spread_kind)

    # --- logging, monitor --------------------------------------------------------------------
    def log_prefix(self) -> dict:
        epoch, idx = self.epoch_and_index(self.step_index - 1)
        return {"step": self.step_index, "epoch": epoch, "idx": idx, "train_seconds": round(self.train_seconds, 1)}

    def save_preview(self, path: Path) -> None:
        """Rows: preset labels (zero, then each property at +2); columns: fixed z."""
        labels = preset_labels()
        z = self.preview_z.repeat(len(labels), 1)
        images = generate_uint8(self.generator_smooth, z, labels.repeat_interleave(len(self.preview_z), 0),
                                device=self.device)
        save_grid(images.permute(0, 2, 3, 1).numpy(), path, ncols=len(self.preview_z))

    @property
    def monitors(self) -> bool:
        return bool(self.classifiers) or self.config.monitor_variety

    def monitor(self) -> dict[str, float]:
        """On the fixed monitor samples of the EMA generator: the mean score of each classifier and (monitor_variety)
        the variety figures `variety_*` (geometric SDs only with a landmark model), and the EMA mapping's w spread."""
        if not self.monitors:
            return {}
        images = generate_uint8(self.generator_smooth, self.monitor_z, self.monitor_labels, device=self.device)
        out = {f"mean_{name}_score": round(float(np.mean(fn(images))), 5) for name, fn in self.classifiers.items()}
        if self.config.monitor_variety:
            figures = variety_figures(images, self.geometry, seed=self.config.seed)
            out.update({f"variety_{key}": round(value, 5) for key, value in figures.items()})
            with torch.no_grad():
                out["ema_w_spread"] = float(f"{float(self.w_spread(self.generator_smooth)):.5g}")
        return out

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                "generator_smooth": self.generator_smooth.state_dict(),
                "g_optimizer": self.g_optimizer.state_dict(), "d_optimizer": self.d_optimizer.state_dict(),
                "schedulers": [s.state_dict() for s in self.schedulers],
                "step": self.step_index, "train_seconds": self.train_seconds, "hook_seconds": self.hook_seconds,
                **rng_state(self.rng),
                "dataset": self.dataset.fingerprint(), "config": json.dumps(dataclasses.asdict(self.config))}

    def load_state_dict(self, state: dict, source: str) -> None:
        if state.get("dataset") != self.dataset.fingerprint():
            raise PipelineError(f"{source}: this run was trained on other images or labels; use --force to start "
                                f"again or another --run-dir")
        for name in ("generator", "discriminator", "generator_smooth"):
            load_state_strict(getattr(self, name), state[name], f"{source} [{name}]")
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        for scheduler, saved in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(saved)
        self.step_index = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.hook_seconds = float(state.get("hook_seconds", 0.0))
        restore_rng_state(self.rng, state)

    def save(self, path: Path) -> None:
        save_weights(path, self.state_dict())

    def export(self, generator_path: str | Path, discriminator_path: str | Path) -> None:
        """GenForce layout: the generator file holds all three entries (stage 1 reads `generator_smooth`
        from it), the discriminator file the `discriminator` entry; float32, loaded strictly. Files that already
        hold these weights (a finished run exported again) are left as they are, so their bytes do not change."""
        save_checkpoint(resolve_repo_path(generator_path), self.generator, self.discriminator, self.generator_smooth,
                        skip_identical=True)
        save_checkpoint(resolve_repo_path(discriminator_path), discriminator=self.discriminator, skip_identical=True)


def load_generator_file(path: str | Path, entry: str = "generator_smooth", **generator_kwargs) -> StyleGANGenerator:
    """A fine-tuned (label-conditioned) generator from a GenForce-layout or plain state-dict file, eval mode."""
    generator = StyleGANGenerator(**generator_kwargs)
    load_state_strict(generator, _float_state(read_module_state(path, entry)), f"{path} [{entry}]")
    return generator.eval()


# --- the run -----------------------------------------------------------------------------------
LOG_PANELS = {"losses": ["d_loss", "d_adv_loss", "g_loss", "r1"], "D scores": ["real_scores_mean", "fake_scores_mean"],
              "real/fake AUROC": ["real_fake_auroc"], "G steps per D step": ["g_train_count"]}
VARIETY_RELATIVE_PANEL = "variety (fraction of step 0)"
VARIETY_PANELS = {VARIETY_RELATIVE_PANEL: [f"variety_{key}" for key in FIGURE_KEYS if key != "geometry_found"],
                  "w spread vs the start": ["w_spread", "ema_w_spread"]}


@dataclass
class RunSummary:
    step: int
    finished: bool
    train_seconds: float
    images: int
    run_dir: Path
    exported: list[Path]
    last_row: dict


def load_geometry(log: Callable[[str], None] = print):
    """The landmark model of the variety monitor, or None (logged) where its packages are missing."""
    try:
        from segmentation.face_geometry import FaceGeometry

        return FaceGeometry()
    except (PipelineError, ImportError, RuntimeError) as exc:
        log(f"monitor: landmark model not available ({exc}); variety without the geometric SDs")
        return None


def run_fine_tuning(config: FineTuneConfig, classifiers: dict[str, Classifier] | None = None, force: bool = False,
                    device: str | None = None, progress: bool = True, max_new_steps: int | None = None,
                    log: Callable[[str], None] = print, geometry="load") -> RunSummary:
    """Train (resuming from run_dir unless `force`) until max_steps or max_minutes, then export.
    `classifiers=None` loads the config's monitor ensembles (after the dataset, so its errors come first);
    `geometry="load"` the landmark model of the variety monitor (when monitor_variety), None: no geometric SDs.
    `device` None: the config's (common/devices.py; auto = cuda when available)."""
    device = choose_device(config.device if device is None else device)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    run_dir = resolve_repo_path(config.run_dir)
    dataset = load_dataset(config.images_dir, config.labels_csv, config.resolution, log)
    if classifiers is None:
        classifiers = load_classifiers(config, log) if config.monitor_every else {}
    if isinstance(geometry, str):
        geometry = load_geometry(log) if config.monitor_every and config.monitor_variety else None
    trainer = FineTuner(config, dataset, classifiers, device, geometry=geometry)
    state_path = run_dir / STATE_FILE
    if force and run_dir.is_dir():
        for stale in [state_path, run_dir / "train_log.csv", *run_dir.glob("preview_*.png")]:
            stale.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.json")
    if state_path.is_file():
        trainer.load_state_dict(read_weights(state_path), str(state_path))
        log(f"resuming {config.version} at step {trainer.step_index} ({trainer.train_seconds / 60:.1f} min trained)")
    trim_log(run_dir / LOG_FILE, trainer.step_index if state_path.is_file() else -1)
    end = config.max_steps if max_new_steps is None else min(config.max_steps, trainer.step_index + max_new_steps)
    budget = config.max_minutes * 60.0

    def out_of_time() -> bool:
        return budget > 0 and trainer.train_seconds + trainer.hook_seconds >= budget

    if trainer.step_index == 0 and trainer.monitors and config.monitor_every:
        append_log(run_dir / LOG_FILE, [{"step": 0, **trainer.monitor()}])  # where the curves start
        trainer.save_preview(run_dir / "preview_000000.png")

    def on_log(step: int, row: dict) -> None:
        start = time.perf_counter()
        if config.monitor_every and (step % config.monitor_every == 0 or step == end or out_of_time()):
            row.update(trainer.monitor())
        trainer.save_preview(run_dir / f"preview_{step:06d}.png")
        trainer.hook_seconds += time.perf_counter() - start

    run_loop(trainer, end, run_dir, config.log_every, config.checkpoint_every, on_log=on_log,
             should_stop=out_of_time if budget > 0 else None, progress=progress,
             postfix={"d": "d_loss", "g": "g_loss", "auroc": "real_fake_auroc"})
    finished = trainer.step_index >= config.max_steps or out_of_time()
    exported = []
    if finished:
        trainer.export(config.export_generator, config.export_discriminator)
        exported = [resolve_repo_path(config.export_generator), resolve_repo_path(config.export_discriminator)]
        panels = dict(LOG_PANELS)
        panels["monitor"] = [f"mean_{name}_score" for name in trainer.classifiers]
        panels.update(VARIETY_PANELS)
        plot_log_curves(run_dir / "train_log.csv", run_dir / "train_curves.png", panels,
                        relative=(VARIETY_RELATIVE_PANEL,))
    log_path = run_dir / "train_log.csv"
    last = pd.read_csv(log_path).iloc[-1].to_dict() if log_path.is_file() else {}
    atomic_write_text(run_dir / "summary.json", json.dumps(
        {"step": trainer.step_index, "train_seconds": round(trainer.train_seconds, 1), "images": len(dataset.img_nos),
         "finished": finished, "exported": [repo_relative(p) for p in exported]}, indent=2) + "\n")
    return RunSummary(trainer.step_index, finished, trainer.train_seconds, len(dataset.img_nos), run_dir, exported,
                      last)


# --- classifiers (monitor, evaluation) ---------------------------------------------------------
def stage2_ensemble(prop: str, models_dir: str | Path) -> Classifier | None:
    """The mean of stage 2's fold models `{prop}_model_{k}.pt` (eval mode, batched), built from the
    `model_info.json` stage 2 writes beside them; None when they are not trained."""
    from cnn.models import build_property_cnn
    from cnn.training import predict_scores

    models_dir = resolve_repo_path(models_dir)
    info_path = models_dir / "model_info.json"
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())[prop]
        resolution, width, folds = int(info["resolution"]), float(info["width_multiplier"]), int(info["num_folds"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    paths = [models_dir / f"{prop}_model_{k}.pt" for k in range(folds)]
    if not all(p.is_file() for p in paths):
        return None
    models = []
    for path in paths:
        model = build_property_cnn(prop, resolution, width)
        load_state_strict(model, read_weights(path), f"{path} ({prop} CNN; re-run run_cnn.py with --retrain)")
        models.append(model.eval())

    def score(images_uint8: torch.Tensor) -> np.ndarray:
        return np.mean([predict_scores(m, images_uint8, 100) for m in models], axis=0)

    return score


def load_classifiers(config: FineTuneConfig, log: Callable[[str], None] = print) -> dict[str, Classifier]:
    out = {}
    for prop in config.monitor_classifiers:
        try:
            fn = stage2_ensemble(prop, config.classifier_models_dir)
        except (PipelineError, ValueError, KeyError) as exc:
            log(f"monitor: {prop} ensemble not usable ({exc}); not monitored")
            continue
        if fn is None:
            log(f"monitor: no {prop} ensemble in {config.classifier_models_dir}; not monitored")
            continue
        out[prop] = fn
    return out


def sample_scores(generator: StyleGANGenerator, classifiers: dict[str, Classifier], num: int, seed: int,
                  label_mode: str = "normal", batch_size: int = 100) -> dict[str, np.ndarray]:
    """Scores of `num` seeded samples (z ~ N(0, 1); labels N(0, 1) or zeros) by each classifier."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(num, generator.z_space_dim, generator=rng)
    labels = torch.randn(num, max(generator.label_size, 1), generator=rng)[:, :generator.label_size]
    if label_mode == "zeros":
        labels = torch.zeros_like(labels)
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, num, batch_size):
        images = generate_uint8(generator, z[start:start + batch_size], labels[start:start + batch_size])
        for name, fn in classifiers.items():
            result = fn(images)
            # a classifier may read several properties at once (the annotator): name_property
            parts = {f"{name}_{key}": value for key, value in result.items()} if isinstance(result, dict) \
                else {name: result}
            for key, value in parts.items():
                out.setdefault(key, []).append(np.asarray(value, np.float64))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def annotator_classifier(log: Callable[[str], None] = print) -> Callable[[torch.Tensor], dict[str, np.ndarray]] | None:
    """The embedded annotator (cnn/annotate.py) as a multi-property classifier: 0/1 labels for gender
    (1 = female), quality, age (1 = looks old) and glass; None where its packages are missing."""
    try:
        from cnn.annotate import FaceAnnotator

        annotator = FaceAnnotator()
    except PipelineError as exc:
        log(f"annotator not available ({exc}); evaluation by the CNN ensembles only")
        return None

    def read(images_uint8: torch.Tensor) -> dict[str, np.ndarray]:
        frame = annotator.annotate(list(images_uint8.permute(0, 2, 3, 1).contiguous().numpy()))
        return {prop: frame[prop].to_numpy(np.float64) for prop in ("gender", "quality", "age", "glass")}

    return read


def evaluate_fine_tuning(config: FineTuneConfig, num: int, log=print, use_annotator: bool = True) -> dict:
    """Classifier fractions (score >= 0.5) on `num` samples of the base (v1) or v1 (v8) and of the result, by the
    config's CNN ensembles and (`use_annotator`) by the annotator (`annotator_{gender,quality,age,glass}`)."""
    classifiers = load_classifiers(config, log)
    annotator = annotator_classifier(log) if use_annotator else None
    if annotator is not None:
        classifiers["annotator"] = annotator
    if not classifiers:
        log(f"no classifier ensembles in {config.classifier_models_dir}; run run_cnn.py first")
        return {}
    if config.version == "v1":
        before = load_generator(resolve_repo_path(config.init_checkpoint), config.init_entry,
                                **config.generator_kwargs(label_size=0))
    else:
        before = load_generator_file(resolve_repo_path(config.init_checkpoint), config.init_entry,
                                     **config.generator_kwargs())
    results = {}
    grid_rows = []  # 16 samples per generator (same z, N(0, 1) labels), to see what the scores were given
    grid_rng = torch.Generator().manual_seed(config.seed + 4444)
    grid_z, grid_labels = torch.randn(16, config.z_space_dim, generator=grid_rng), torch.randn(16, LABEL_SIZE,
                                                                                             generator=grid_rng)
    for name, path, entry in (("before", None, None),
                              ("generator_smooth", config.export_generator, "generator_smooth"),
                              ("generator", config.export_generator, "generator")):
        generator = before if path is None else load_generator_file(resolve_repo_path(path), entry,
                                                                    **config.generator_kwargs())
        grid_rows.append(generate_uint8(generator, grid_z, grid_labels[:, :generator.label_size]))
        for label_mode in ("normal", "zeros"):
            if label_mode == "zeros" and entry != "generator_smooth":
                continue  # the unconditioned base takes no label; the raw G only with the labels stage 1 uses
            # the annotator (seconds per 100 faces) reads the generator before and the one later stages sample from
            readers = classifiers if path is None or (entry, label_mode) == ("generator_smooth", "normal") else \
                {k: v for k, v in classifiers.items() if k != "annotator"}
            scores = sample_scores(generator, readers, num, seed=config.seed + 4242, label_mode=label_mode)
            key = name if path is None else f"{name}/labels_{label_mode}"
            results[key] = {prop: {"mean": round(float(s.mean()), 4), "fraction_ge_0.5": round(float((s >= 0.5).mean()), 4)}
                            for prop, s in scores.items()}
            log(f"{key}: " + ", ".join(f"{p} {v['fraction_ge_0.5']:.3f} (mean {v['mean']:.3f})"
                                       for p, v in results[key].items()))
    if config.property_cnn:
        generator = load_generator_file(resolve_repo_path(config.export_generator), "generator_smooth",
                                        **config.generator_kwargs())
        results["label_pearson_r"] = label_correlations(generator, property_reader(config.property_cnn), num,
                                                        config.seed + 4343)
        log(f"Pearson r (requested label vs property CNN reading): {results['label_pearson_r']}")
    else:
        log("no --property-cnn given: label-to-image correlation not measured")
    out = resolve_repo_path(config.run_dir) / f"evaluation_{num}.json"
    save_grid(torch.cat(grid_rows).permute(0, 2, 3, 1).numpy(), out.with_name("evaluation_samples.png"), ncols=16)
    atomic_write_text(out, json.dumps({"num_samples": num, "seed": config.seed + 4242, "results": results},
                                      indent=2) + "\n")
    log(f"-> {out}")
    return results


def label_correlations(generator: StyleGANGenerator, read_properties: Callable[[torch.Tensor], np.ndarray],
                       num: int, seed: int, batch_size: int = 100) -> dict[str, float]:
    """Per property, Pearson r between the requested label value (N(0, 1) per dim, independent) and the
    reading of the generated image by `read_properties` ([N, 3, R, R] uint8 -> [N, 7], the label order)."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(num, generator.z_space_dim, generator=rng)
    labels = torch.randn(num, LABEL_SIZE, generator=rng)
    readings = np.concatenate([np.asarray(read_properties(generate_uint8(generator, z[s:s + batch_size],
                                                                         labels[s:s + batch_size])))
                               for s in range(0, num, batch_size)])
    return {name: round(float(np.corrcoef(labels[:, k].numpy(), readings[:, k])[0, 1]), 4)
            for k, name in enumerate(PROPERTY_COLUMNS)}


def property_reader(path: str | Path) -> Callable[[torch.Tensor], np.ndarray]:
    """The property CNN of `path` (property_score_cnn), its outputs put in PROPERTY_COLUMNS order."""
    from property_score_cnn.scoring import load_property_cnn, score_images

    model = load_property_cnn(resolve_repo_path(path))
    names = list(getattr(model, "output_names", []))
    index = [names.index(c.removesuffix("_score")) if c.removesuffix("_score") in names else k
             for k, c in enumerate(PROPERTY_COLUMNS)]

    def read(images_uint8: torch.Tensor) -> np.ndarray:
        return score_images(model, images_uint8, device="cpu").numpy()[:, index]

    return read
