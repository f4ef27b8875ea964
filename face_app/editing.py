"""The edit function behind the Edit tab, usable without any UI: render an edited face, save it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from common.devices import choose_device
from common.errors import PipelineError
from common.fileio import atomic_write_text, save_image
from common.images import to_uint8
from stylegan.generate import batch_invariant
from vectorfind.directions import GROUP_NAMES, direction_path, edit_w, load_directions

PROPERTIES = ("eyes", "mouth", "pose")


def load_app_generator(explicit: str, profile: str, device: str = "auto"):
    """The generator VectorFind uses (vectorfind.models: explicit file, else FineTune-v8, v1, the base), so the
    app edits in the w space its directions were found in, on `device` (common/devices.py); returns (generator,
    its GeneratorChoice)."""
    from vectorfind.models import choose_generator, load_chosen_generator

    choice = choose_generator(explicit, profile)
    return load_chosen_generator(choice, choose_device(device)), choice


def read_direction_sets(folders: dict[str, Path | None], strict: bool = False
                        ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """{kind: {group: directions}} for each kind's folder (e.g. 'chosen', 'plain', 'conditional') and every group
    whose three files exist there; a folder without direction files is left out. A group with some but not all of its
    files is said on stderr (the app then edits that group's faces with another group's directions), or with
    `strict` (run_app.py --check) is an error naming the first missing file."""
    sets: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for kind, folder in folders.items():
        if folder is None:
            continue
        paths = {g: [direction_path(folder, p, g) for p in PROPERTIES] for g in GROUP_NAMES}
        complete = [g for g in GROUP_NAMES if all(path.is_file() for path in paths[g])]
        partial = [g for g in GROUP_NAMES if g not in complete and any(path.is_file() for path in paths[g])]
        if partial or (strict and complete and len(complete) < len(GROUP_NAMES)):
            group = (partial or [g for g in GROUP_NAMES if g not in complete])[0]
            missing = next(path for path in paths[group] if not path.is_file())
            message = (f"{missing}: direction file missing ({len(complete)} of {len(GROUP_NAMES)} groups complete in "
                       f"{folder}); re-run run_vectorfind.py (stages 8-9) to write them")
            if strict:
                raise PipelineError(message)
            print(f"warning: {message}", file=sys.stderr)
        if complete:
            sets[kind] = {g: load_directions(folder, g) for g in complete}
    return sets


class FaceEditor:
    """A generator plus property directions (per kind and group); renders edited faces from w.

    One face renders as a batch of 1 on one thread: at 64 px that is a few ms of convolution, where
    the generation stage's batch padding (stylegan.generate.batch_invariant, 16 rows) would cost 16x."""

    def __init__(self, generator, directions: dict[str, np.ndarray] | None = None,
                 direction_sets: dict[str, dict[str, dict[str, np.ndarray]]] | None = None, label_size: int = 0):
        self.generator = generator.eval()
        self.device = next(generator.parameters()).device  # latents and w travel to it; images come back
        self.label_size = label_size
        if direction_sets is None:
            direction_sets = {"chosen": {GROUP_NAMES[0]: directions}} if directions else {}
        self.direction_sets = direction_sets
        first_kind = next(iter(direction_sets), "chosen")
        self.directions = directions if directions is not None else self.directions_for(first_kind, GROUP_NAMES[0])

    @property
    def num_layers(self) -> int:
        return self.generator.num_layers

    def kinds(self) -> list[str]:
        return list(self.direction_sets)

    def groups(self, kind: str = "chosen") -> list[str]:
        return list(self.direction_sets.get(kind, {}))

    def directions_for(self, kind: str, group: str | None) -> dict[str, np.ndarray]:
        """The directions of (kind, group); a group without files falls back to the kind's first group."""
        by_group = self.direction_sets.get(kind) or {}
        if not by_group:
            return {}
        return by_group.get(group) if group in by_group else next(iter(by_group.values()))

    @torch.inference_mode()
    def w_from_latent(self, latent: np.ndarray) -> np.ndarray:
        """w (mapping output, no truncation) of one latent row: z dims, then label dims if the generator has them."""
        latent = np.asarray(latent, np.float32).reshape(-1)
        z_dim = self.generator.z_space_dim
        if latent.size < z_dim + self.label_size:
            raise PipelineError(f"a latent needs {z_dim + self.label_size} values ({z_dim} z + {self.label_size} "
                                f"label dims), got {latent.size}")
        z = torch.from_numpy(latent[:z_dim].copy()).view(1, -1).to(self.device)
        label = (torch.from_numpy(latent[z_dim:z_dim + self.label_size].copy()).view(1, -1).to(self.device)
                 if self.label_size else None)
        if label is None:
            # Padded like the generation and VectorFind stages, so a case's w is bit-identical to theirs.
            return batch_invariant(self.generator.mapping, z)[0].cpu().numpy()
        return batch_invariant(lambda rows: self.generator.mapping(rows[:, :z_dim], rows[:, z_dim:]),
                               torch.cat([z, label], 1))[0].cpu().numpy()

    def w_from_z(self, z: np.ndarray) -> np.ndarray:
        return self.w_from_latent(z)

    def edited_wp(self, w: np.ndarray, weights: dict[str, float], layers: tuple[int, int] | None = None,
                  directions: dict[str, np.ndarray] | None = None) -> torch.Tensor:
        directions = self.directions if directions is None else directions
        # Properties without a direction (none found yet) are left unedited rather than refused.
        used = {p: float(v) for p, v in weights.items() if p in directions and float(v) != 0.0}
        base = torch.from_numpy(np.asarray(w, np.float32).reshape(-1, np.asarray(w).shape[-1]))
        return edit_w(base, directions, used, self.num_layers, layers).contiguous()

    @torch.inference_mode()
    def render(self, w: np.ndarray, weights: dict[str, float], layers: tuple[int, int] | None = None,
               directions: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """uint8 [H, W, 3] image of w moved along each property direction by its weight."""
        return to_uint8(self.generator.synthesis(self.edited_wp(w, weights, layers, directions).to(self.device)))[0]

    @torch.inference_mode()
    def render_frames(self, w: np.ndarray, frames: list[dict[str, float]], layers: tuple[int, int] | None = None,
                      directions: dict[str, np.ndarray] | None = None, batch_size: int = 16) -> np.ndarray:
        """[N, H, W, 3] uint8, one image per weight dict (an animation), rendered in batches."""
        images = []
        for start in range(0, len(frames), batch_size):
            wp = torch.cat([self.edited_wp(w, f, layers, directions) for f in frames[start:start + batch_size]])
            images.append(to_uint8(self.generator.synthesis(wp.to(self.device))))
        return np.concatenate(images)


def next_free_stem(folder: Path, prefix: str) -> str:
    taken = {p.stem for p in folder.glob(f"{prefix}_*")} if folder.is_dir() else set()
    number = 0
    while f"{prefix}_{number:04d}" in taken:
        number += 1
    return f"{prefix}_{number:04d}"


def save_face(folder: Path, image: np.ndarray, latent: np.ndarray | None, w: np.ndarray,
              weights: dict[str, float], details: dict) -> Path:
    """face_NNNN.png beside face_NNNN.json (latent, w, weights and where they came from); atomic writes."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = next_free_stem(folder, "face")
    record = {"weights": {p: float(weights.get(p, 0.0)) for p in PROPERTIES}, **details,
              "latent": None if latent is None else [float(v) for v in np.asarray(latent).reshape(-1)],
              "w": [float(v) for v in np.asarray(w).reshape(-1)]}
    save_image(image, folder / f"{stem}.png")
    atomic_write_text(folder / f"{stem}.json", json.dumps(record, indent=1))
    return folder / f"{stem}.png"
