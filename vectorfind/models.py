"""Which generator and property CNN VectorFind runs on, and the one function through which images are scored.

Generator order (first file that exists): FineTune-v8, FineTune-v1, the profile's [generator] base checkpoint.
A conditional generator's label size is read from its `mapping.label_weight`; VectorFind treats the label dims
as extra latent noise, N(0, 1), as the original v8 did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from common import artifacts
from common.checkpoints import load_state_strict
from common.config import resolve_config
from common.paths import repo_relative, resolve_repo_path
from common.errors import PipelineError
from stylegan.checkpoint import read_checkpoint, select_entry
from stylegan.generate import GeneratorConfig

FINE_TUNED_GENERATORS = artifacts.EDITED_GENERATORS

# images: uint8 [N, H, W, 3] -> scores float32 [N, 8] in the merged CNN's output order
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass
class GeneratorChoice:
    path: Path
    entry: str
    label_size: int
    kwargs: dict

    def describe(self) -> str:
        labels = f"label_size {self.label_size}" if self.label_size else "unconditional"
        return f"{repo_relative(self.path)} [{self.entry}], {labels}"  # relative: the same run in another root says the same


def choose_generator(explicit: str, profile: str) -> GeneratorChoice:
    """The generator file VectorFind uses and how to build it (architecture from the profile's [generator])."""
    base = resolve_config(GeneratorConfig, "generator", profile=profile)
    if explicit:
        path = resolve_repo_path(explicit)
        if not path.is_file():
            raise PipelineError(f"{path}: generator checkpoint not found; fix --generator or leave it empty "
                                f"for the automatic choice (v8, v1, base)")
        candidates = [path]
    else:
        candidates = [resolve_repo_path(p) for p in FINE_TUNED_GENERATORS] + [resolve_repo_path(base.checkpoint)]
    path = next((p for p in candidates if p.is_file()), candidates[-1])
    hint = base.checkpoint_hint() if path == resolve_repo_path(base.checkpoint) else ""
    state = read_checkpoint(path, hint)
    entry = base.checkpoint_entry if path == resolve_repo_path(base.checkpoint) else "generator"
    if not isinstance(state.get(entry), dict):
        entry = next((e for e in ("generator", "generator_smooth") if isinstance(state.get(e), dict)), entry)
    weights = select_entry(state, entry, path)
    label_weight = weights.get("mapping.label_weight")
    label_size = int(label_weight.shape[0]) if isinstance(label_weight, torch.Tensor) else 0
    return GeneratorChoice(path, entry, label_size, base.generator_kwargs())


def load_chosen_generator(choice: GeneratorChoice, device: torch.device) -> nn.Module:
    from stylegan.stylegan_generator import StyleGANGenerator

    weights = select_entry(read_checkpoint(choice.path), choice.entry, choice.path)
    generator = StyleGANGenerator(label_size=choice.label_size, **choice.kwargs)
    load_state_strict(generator, weights, f"{choice.path} [{choice.entry}]")
    generator = generator.to(device).eval()
    if device.type == "cpu":
        generator = generator.to(memory_format=torch.channels_last)
    return generator


def property_cnn_scorer(path: str | Path, resolution: int, batch_size: int, device: torch.device) -> Scorer:
    """The merged property CNN as a Scorer (imported here only, so the rest of vectorfind runs without it)."""
    path = resolve_repo_path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: merged property CNN not found; train it with run_property_score_cnn.py "
                            f"--model merged (stage 5) or pass --property-cnn")
    from property_score_cnn import load_property_cnn, score_images

    model = load_property_cnn(path, resolution=resolution).to(device).eval()
    return module_scorer(model, batch_size, lambda m, images, batch_size: score_images(m, images, batch_size, device))


def module_scorer(model: nn.Module, batch_size: int, score_fn=None) -> Scorer:
    """A Scorer around `score_fn(model, images, batch_size)`; without score_fn the module is applied to uint8
    NCHW tensors directly (test stand-ins)."""

    @torch.inference_mode()
    def score(images: np.ndarray) -> np.ndarray:
        if score_fn is not None:
            out = score_fn(model, images, batch_size=batch_size)
        else:
            nchw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
            out = torch.cat([model(nchw[i:i + batch_size]) for i in range(0, len(nchw), batch_size)])
        return out.float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float32)

    return score


