"""Train the embedded profile's 64x64 StyleGAN from the PyPI DigiFace DCGAN (the teacher).

Every step draws fresh latents. The first `NOISE_DIM` (100) entries of the student's 512-d z
are the teacher's noise, so both networks see the same random vector and the student can be
taught by regression (paired multi-scale L1) as well as adversarially (non-saturating loss
with lazy R1 against teacher images). Regression comes first and grows the student coarse to
fine (16 -> 32 -> 64 px through the architecture's lod; a 16 px step costs a sixth of a full
one on a CPU), with the mapping network trained at the normal rate; the adversarial term, switched on
later, is meant to sharpen the result. An EMA copy of the generator (`generator_smooth`) is
what the profile generates with.

Everything is seeded and resumable: the run folder keeps the latest full training state
(models, optimisers, step, RNG states), a CSV log and sample grids.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import artifacts
from common.checkpoints import read_weights, save_weights
from common.fileio import atomic_write_text
from common.images import save_grid, to_uint8
from stylegan.checkpoint import save_checkpoint
from stylegan.gan_trainer import (STATE_FILE, discriminator_step, ema_beta, frozen_requires_grad,
                                  generator_adversarial_loss, restore_rng_state, rng_state, run_loop, update_ema)
from stylegan.stylegan_discriminator import StyleGANDiscriminator
from stylegan.stylegan_generator import StyleGANGenerator
from stylegan.teacher_dcgan import NOISE_DIM, load_teacher


@dataclass
class DistillationConfig:
    run_dir: str = "runs/embedded_base"
    resolution: int = 64
    z_space_dim: int = 512
    w_space_dim: int = 512
    mapping_layers: int = 8
    fmaps_base: int = 4096
    fmaps_max: int = 128
    total_steps: int = 30000
    batch_size: int = 16
    lr: float = 0.002
    betas: tuple[float, float] = (0.5, 0.99)
    # The mapping's equalised lr multiplier (0.01, GenForce's) keeps w nearly frozen at its random init,
    # and learning z -> image then stalls near the mean face; distillation trains it at the normal rate.
    mapping_lr_scale: float = 100.0
    # Coarse first: from this lod (2 = 16x16) the student grows to full resolution, each level held for
    # lod_stable_images and then faded into the next over lod_transition_images (ProGAN's schedule).
    # Layout, pose and colour are learnt at a fraction of the full-resolution cost. 0 = no growing.
    progressive_start_lod: float = 2.0
    lod_stable_images: int = 96000
    lod_transition_images: int = 32000
    progressive_start_images: int = 0  # images_seen at which growing starts (e.g. that of --init-from)
    paired_weight: float = 1.0
    adversarial_start_step: int = 24000  # regression only before this step
    adversarial_weight: float = 0.05
    r1_gamma: float = 10.0
    r1_interval: int = 16
    ema_half_life_images: float = 5000.0
    # z entries the teacher never sees carry no information about the target image; at a random init they
    # dominate w (412 of 512 inputs) and the student regresses to the mean face. Starting the first mapping
    # layer blind to them lets w depend on the teacher's noise from step one.
    zero_unpaired_z: bool = True
    seed: int = 2025
    threads: int = 2
    channels_last: bool = True
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 250
    export_path: str = artifacts.EMBEDDED_GENERATOR
    # Start a new run (no training state in run_dir) from exported weights, e.g. the shipped model, at this step.
    init_from: str = ""
    initial_step: int = 0

    def generator_kwargs(self) -> dict:
        return dict(resolution=self.resolution, z_space_dim=self.z_space_dim, w_space_dim=self.w_space_dim,
                    mapping_layers=self.mapping_layers, fmaps_base=self.fmaps_base, fmaps_max=self.fmaps_max)

    def discriminator_kwargs(self) -> dict:
        return dict(resolution=self.resolution, fmaps_base=self.fmaps_base, fmaps_max=self.fmaps_max)


def multiscale_l1(student: torch.Tensor, teacher: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Mean L1 at full, half and quarter resolution: coarse scales fix layout and colour first."""
    loss = student.new_zeros(())
    for level in range(scales):
        if level:
            student, teacher = F.avg_pool2d(student, 2), F.avg_pool2d(teacher, 2)
        loss = loss + (student - teacher).abs().mean()
    return loss / scales


def student_latents(batch: int, z_dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """z for the student; its first NOISE_DIM entries are the teacher's noise."""
    z = torch.randn(batch, z_dim, generator=generator)
    return z, z[:, :NOISE_DIM]


class Distiller:
    """Holds the models, optimisers and RNG of one run; `step()` advances training by one batch."""

    def __init__(self, config: DistillationConfig, device: str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        self.generator = StyleGANGenerator(**config.generator_kwargs()).to(self.device)
        if config.zero_unpaired_z:
            with torch.no_grad():
                self.generator.mapping.dense0.weight[:, NOISE_DIM:] = 0.0
        self.discriminator = StyleGANDiscriminator(**config.discriminator_kwargs()).to(self.device)
        if config.channels_last:
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        self.generator_smooth = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.teacher = load_teacher(self.device)
        mapping = [p for n, p in self.generator.named_parameters() if n.startswith("mapping.")]
        others = [p for n, p in self.generator.named_parameters() if not n.startswith("mapping.")]
        self.g_optimizer = torch.optim.Adam([{"params": others},
                                             {"params": mapping, "lr": config.lr * config.mapping_lr_scale}],
                                            lr=config.lr, betas=config.betas)
        r1_ratio = config.r1_interval / (config.r1_interval + 1)  # lazy-regularisation correction
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr * r1_ratio,
                                            betas=tuple(b ** r1_ratio for b in config.betas))
        self.rng = torch.Generator().manual_seed(config.seed)
        self.step_index = 0
        self.images_seen = 0
        self.train_seconds = 0.0

    # --- one training step -------------------------------------------------------------------
    def current_lod(self) -> float:
        cfg = self.config
        if cfg.progressive_start_lod <= 0:
            return 0.0
        images = max(self.images_seen - cfg.progressive_start_images, 0)
        phase = cfg.lod_stable_images + cfg.lod_transition_images
        level, within = divmod(images, phase)
        fade = min(max((within - cfg.lod_stable_images) / max(cfg.lod_transition_images, 1), 0.0), 1.0)
        return max(cfg.progressive_start_lod - level - fade, 0.0)

    def step(self) -> dict[str, float]:
        cfg = self.config
        start = time.perf_counter()
        lod = self.current_lod()
        # The buffers travel with the weights, so an exported or resumed model renders at its trained lod.
        for module in (self.generator.synthesis, self.discriminator):
            module.lod.fill_(lod)
        z, noise = student_latents(cfg.batch_size, cfg.z_space_dim, self.rng)
        z, noise = z.to(self.device), noise.to(self.device)
        with torch.no_grad():
            real = self.teacher(noise)
        adversarial = self.step_index >= cfg.adversarial_start_step
        stats: dict[str, float] = {}
        self.generator.train()
        fake = self.generator(z, w_moving_decay=0.995)["image"]
        if adversarial:
            # The same fakes train D (detached) and then G: one generator forward per step, not two.
            stats.update(self._discriminator_step(fake.detach(), real))
        paired = multiscale_l1(fake, real)
        g_loss = cfg.paired_weight * paired
        if adversarial:
            with frozen_requires_grad(self.discriminator):
                g_adv = generator_adversarial_loss(self.discriminator(fake))
            g_loss = g_loss + cfg.adversarial_weight * g_adv
            stats["g_adv"] = float(g_adv.detach())
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        self._update_ema()
        self.step_index += 1
        self.images_seen += cfg.batch_size
        self.train_seconds += time.perf_counter() - start
        stats["paired_l1"] = float(paired.detach())
        stats["lod"] = lod
        return stats

    def _discriminator_step(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        result = discriminator_step(self.discriminator, self.d_optimizer, real, fake, cfg.r1_gamma,
                                    apply_r1=self.step_index % cfg.r1_interval == 0, r1_weight=cfg.r1_interval)
        stats = {"d_loss": result.adversarial_loss, "real_score": float(result.real_scores.mean()),
                 "fake_score": float(result.fake_scores.mean())}
        if result.r1 is not None:
            stats["r1"] = result.r1
        return stats

    def _update_ema(self) -> None:
        update_ema(self.generator_smooth, self.generator, ema_beta(self.config.batch_size,
                                                                   self.config.ema_half_life_images))

    # --- evaluation, state -------------------------------------------------------------------
    @torch.inference_mode()
    def ema_paired_l1(self, num: int = 256, seed: int = 12345) -> float:
        """L1 between the EMA student and the teacher on a fixed validation set of latents."""
        z, noise = student_latents(num, self.config.z_space_dim, torch.Generator().manual_seed(seed))
        losses = []
        for zb, nb in zip(z.split(64), noise.split(64)):
            losses.append(float((self.generator_smooth(zb.to(self.device))["image"]
                                 - self.teacher(nb.to(self.device))).abs().mean()) * len(zb))
        return sum(losses) / num

    @torch.inference_mode()
    def sample_grid(self, path: Path, num: int = 32, seed: int = 777) -> None:
        """Teacher (odd rows) above student EMA (even rows) for the same latents."""
        z, noise = student_latents(num, self.config.z_space_dim, torch.Generator().manual_seed(seed))
        student = to_uint8(self.generator_smooth(z.to(self.device))["image"])
        teacher = to_uint8(self.teacher(noise.to(self.device)))
        rows = []
        for start in range(0, num, 8):
            rows += [teacher[start:start + 8], student[start:start + 8]]
        save_grid(np.concatenate(rows), path, ncols=8)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
            "generator_smooth": self.generator_smooth.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(), "d_optimizer": self.d_optimizer.state_dict(),
            "step": self.step_index, "images_seen": self.images_seen, "train_seconds": self.train_seconds,
            **rng_state(self.rng),
            "config": json.dumps(dataclasses.asdict(self.config)),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_smooth.load_state_dict(state["generator_smooth"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.step_index = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.train_seconds = float(state["train_seconds"])
        restore_rng_state(self.rng, state)

    def load_weights(self, path: str | Path, step: int) -> None:
        """Continue from an exported GenForce-layout file (optimiser moments start afresh)."""
        from stylegan.checkpoint import load_state_strict, read_checkpoint

        state = read_checkpoint(path)
        for name in ("generator", "discriminator", "generator_smooth"):
            weights = {k: v.float() if v.is_floating_point() else v for k, v in state[name].items()}
            load_state_strict(getattr(self, name), weights, f"{path} [{name}]")
        self.step_index = step
        self.images_seen = step * self.config.batch_size

    def save(self, path: Path) -> None:
        save_weights(path, self.state_dict())

    def log_prefix(self) -> dict:
        return {"step": self.step_index, "images_seen": self.images_seen, "train_seconds": round(self.train_seconds, 1)}

    def export(self, path: str | Path) -> None:
        """The shipped GenForce-layout file (float16 to stay small; loads into float32 modules)."""
        save_checkpoint(path, self.generator, self.discriminator, self.generator_smooth, dtype=torch.float16)


def train(config: DistillationConfig, device: str = "cpu", max_steps: int | None = None,
          progress: bool = True) -> Distiller:
    """Train until `config.total_steps` (or `max_steps` more steps), resuming from run_dir if possible."""
    torch.set_num_threads(config.threads)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    distiller = Distiller(config, device)
    state_path = run_dir / STATE_FILE
    if state_path.is_file():
        distiller.load_state_dict(read_weights(state_path))
    elif config.init_from:
        distiller.load_weights(config.init_from, config.initial_step)
    end = config.total_steps if max_steps is None else min(config.total_steps, distiller.step_index + max_steps)

    def on_sample(step: int, pending_rows: list[dict]) -> None:
        if pending_rows:
            pending_rows[-1]["ema_val_l1"] = round(distiller.ema_paired_l1(), 5)
        distiller.sample_grid(run_dir / f"samples_{step:06d}.png")

    run_loop(distiller, end, run_dir, config.log_every, config.checkpoint_every, sample_every=config.sample_every,
             on_sample=on_sample, progress=progress, postfix={"l1": "paired_l1", "d": "d_loss"})
    return distiller
