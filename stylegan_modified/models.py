"""Stage 6's generator and discriminator: v1's conditional models built from the unconditioned base, v8's loaded
from v1, the trainable parts chosen, a fine-tuned generator file loaded, and images sampled from a generator."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from common.checkpoints import load_state_strict, read_weights
from common.errors import PipelineError
from common.images import to_uint8
from common.paths import resolve_repo_path
from stylegan.checkpoint import read_checkpoint, select_entry
from stylegan.stylegan_discriminator import StyleGANDiscriminator
from stylegan.stylegan_generator import StyleGANGenerator
from stylegan_modified.config import FineTuneConfig


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


def load_generator_file(path: str | Path, entry: str = "generator_smooth", **generator_kwargs) -> StyleGANGenerator:
    """A fine-tuned (label-conditioned) generator from a GenForce-layout or plain state-dict file, eval mode."""
    generator = StyleGANGenerator(**generator_kwargs)
    load_state_strict(generator, _float_state(read_module_state(path, entry)), f"{path} [{entry}]")
    return generator.eval()


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
