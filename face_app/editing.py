"""The edit function behind the Edit tab, usable without any UI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import PipelineError
from common.images import to_uint8
from stylegan.generate import batch_invariant
from vectorfind.directions import edit_w

PROPERTIES = ("eyes", "mouth", "pose")
GENERATOR_CANDIDATES = ("stylegan/models/stylegan_gen_fine_tuned_v8.pth",
                        "stylegan_modified/stylegan_gen_fine_tuned_v1.pth",
                        "stylegan/models/embedded_stylegan_64.pth")


def pick_generator_path(repo_root: Path) -> Path:
    """v8 if trained, else v1, else the base generator (the first that exists)."""
    for relative in GENERATOR_CANDIDATES:
        if (repo_root / relative).is_file():
            return repo_root / relative
    raise PipelineError(f"{repo_root / GENERATOR_CANDIDATES[-1]}: no generator found; train or export one first")


class FaceEditor:
    """Holds a generator, one face's w and the property directions; renders edited faces."""

    def __init__(self, generator, directions: dict[str, np.ndarray]):
        self.generator = generator.eval()
        self.directions = directions

    @torch.inference_mode()
    def w_from_z(self, z: np.ndarray) -> np.ndarray:
        z_t = torch.from_numpy(np.asarray(z, np.float32).reshape(1, -1))
        return batch_invariant(self.generator.mapping, z_t)[0].numpy()

    @torch.inference_mode()
    def render(self, w: np.ndarray, weights: dict[str, float], layers: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 [H, W, 3] image of w moved along each property direction by its weight."""
        wp = edit_w(torch.as_tensor(np.asarray(w, np.float32)), self.directions, weights,
                    self.generator.num_layers, layers)
        image = batch_invariant(self.generator.synthesis, wp.contiguous())
        return to_uint8(image)[0]
