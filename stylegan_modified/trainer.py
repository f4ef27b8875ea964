"""One fine-tuning run's models, optimisers and RNG: `FineTuner.step()` is one D step and its G steps; previews,
the monitor of fixed samples and the resumable training state (with the dataset's fingerprint) live here too."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from common.checkpoints import load_state_strict, save_weights
from common.errors import PipelineError
from common.freshness import what_differs
from common.images import save_grid
from common.paths import resolve_repo_path
from stylegan.checkpoint import save_checkpoint
from stylegan.gan_trainer import (discriminator_step, ema_beta, frozen_requires_grad, generator_adversarial_loss,
                                  real_fake_auroc, restore_rng_state, rng_state, update_ema, w_spread_penalty)
from stylegan.stylegan_generator import StyleGANGenerator
from stylegan.variety import variety_figures
from stylegan_modified.config import LABEL_SIZE, FineTuneConfig
from stylegan_modified.dataset import FineTuneDataset
from stylegan_modified.models import build_models, generate_uint8, select_trainable
from stylegan_modified.monitor import Classifier


def preset_labels(strength: float = 2.0) -> torch.Tensor:
    """Preview rows: the all-zero label, then each property alone at +strength (in z-score units)."""
    return torch.cat([torch.zeros(1, LABEL_SIZE), strength * torch.eye(LABEL_SIZE)])


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
        differs = what_differs({"dataset": state.get("dataset")}, {"dataset": self.dataset.fingerprint()})
        if differs:
            raise PipelineError(f"{source}: this run was trained on other images or labels ({differs}); use --force "
                                f"to start again or another --run-dir")
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
