"""Reading and writing StyleGAN checkpoints in the GenForce layout.

A model-zoo file is a flat dict of state dicts: `generator`, `discriminator` and, usually,
`generator_smooth` (the EMA copy). A raw GenForce training checkpoint nests the same under
`models`; both are accepted. Files are untrusted input: they are read with
`weights_only=True`, so a pickle that carries code is refused before anything runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from common.errors import PipelineError
from common.checkpoints import load_state_strict, read_weights, save_weights

ENTRIES = ("generator", "discriminator", "generator_smooth")


def read_checkpoint(path: str | Path, missing_hint: str = "") -> dict[str, dict[str, torch.Tensor]]:
    """The flat {entry: state_dict} dict of a GenForce-layout file, loaded weights-only on the CPU."""
    state = read_weights(path, missing_hint)
    if isinstance(state, dict) and isinstance(state.get("models"), dict):
        state = state["models"]
    if not isinstance(state, dict) or not any(isinstance(state.get(e), dict) for e in ENTRIES):
        keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise PipelineError(f"{path}: not a GenForce StyleGAN checkpoint (expected entries {', '.join(ENTRIES)}; "
                            f"found {keys})")
    return state


def select_entry(state: dict, entry: str, path: str | Path) -> dict[str, torch.Tensor]:
    if entry not in ENTRIES:
        raise PipelineError(f"checkpoint entry must be one of {', '.join(ENTRIES)}, got '{entry}'")
    if not isinstance(state.get(entry), dict):
        present = [e for e in ENTRIES if isinstance(state.get(e), dict)]
        raise PipelineError(f"{path}: has no '{entry}' entry (present: {', '.join(present)}); "
                            f"choose another with --checkpoint-entry")
    return state[entry]


def load_generator(path: str | Path, entry: str = "generator", device: str | torch.device = "cpu",
                   missing_hint: str = "", **generator_kwargs) -> nn.Module:
    """A StyleGANGenerator built with `generator_kwargs`, strictly loaded from `entry`, in eval mode."""
    from stylegan.stylegan_generator import StyleGANGenerator

    state = read_checkpoint(path, missing_hint)
    generator = StyleGANGenerator(**generator_kwargs)
    load_state_strict(generator, select_entry(state, entry, path), f"{path} [{entry}]")
    return generator.to(device).eval()


def load_discriminator(path: str | Path, device: str | torch.device = "cpu", missing_hint: str = "",
                       **discriminator_kwargs) -> nn.Module:
    from stylegan.stylegan_discriminator import StyleGANDiscriminator

    state = read_checkpoint(path, missing_hint)
    discriminator = StyleGANDiscriminator(**discriminator_kwargs)
    load_state_strict(discriminator, select_entry(state, "discriminator", path), f"{path} [discriminator]")
    return discriminator.to(device).eval()


def save_checkpoint(path: str | Path, generator: nn.Module | None = None, discriminator: nn.Module | None = None,
                    generator_smooth: nn.Module | None = None, dtype: torch.dtype | None = None,
                    skip_identical: bool = False) -> None:
    """Write the flat GenForce layout atomically. `dtype=torch.float16` halves the file; loading
    into float32 modules casts back (buffers such as `lod` stay exact). `skip_identical`: see save_weights."""
    state: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in (("generator", generator), ("discriminator", discriminator),
                         ("generator_smooth", generator_smooth)):
        if module is None:
            continue
        sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        if dtype is not None:
            sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        state[name] = sd
    save_weights(path, state, skip_identical=skip_identical)
