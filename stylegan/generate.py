"""Stage 1: sample faces from the profile's StyleGAN and save them with their latents.

Image i is a function of (run seed, i) alone: its z (and, with style mixing, its second z and
cut-off layer) come from a random stream seeded by the pair, so any batch size, device or an
interrupted-and-resumed run gives the same images. `latents.npz` beside the images holds
index, z, w, the mixing latents and the seed, so every image can be regenerated exactly.

A label-conditioned checkpoint (FineTune-v1 / v8; its label size is read from `mapping.label_weight`)
gets a label per image: all zeros, N(0, 1) (as the original's v8 dataset; drawn from a stream seeded by
(seed, i, 1), so z stays that of the same index without labels) or one fixed vector; the labels are saved
in latents.npz as `label` with `label_mode`. An unconditioned checkpoint takes no label and its images and
latent file are exactly what they were before labels existed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.artifacts import CELEBA_GENERATOR, EMBEDDED_GENERATOR, FACES, GENERATION_CONFIG_FILE, grid_png
from common.config import check_choices, dump_config, resolve_repo_path
from common.errors import PipelineError
from common.fileio import IMAGE_NAME, atomic_path, save_image
from common.images import save_grid, to_uint8
from common.checkpoints import load_state_strict
from common.devices import DEVICE_HELP, check_device_name, choose_device
from stylegan.checkpoint import read_checkpoint, select_entry
from stylegan.stylegan_generator import StyleGANGenerator

LATENT_FILE = "latents.npz"
CONFIG_FILE = GENERATION_CONFIG_FILE
CELEBA_CHECKPOINT_HINT = ("download 'StyleGAN (ours) celeba-partial-256x256' from the GenForce MODEL_ZOO "
                          f"(github.com/genforce/genforce/blob/master/MODEL_ZOO.md) and save it as {CELEBA_GENERATOR}")
IMAGE_FORMATS = ("png", "jpg")
GENERATOR_ENTRIES = ("generator", "generator_smooth")
LABEL_MODES = ("zeros", "normal", "fixed")
EMBEDDED_CHECKPOINT_HINT = "train it with `python -m stylegan.train_embedded_base --export` (see README)"


@dataclass
class GeneratorConfig:
    profile: str = "embedded"
    checkpoint: str = field(default=EMBEDDED_GENERATOR,
                            metadata={"help": "GenForce-layout StyleGAN checkpoint"})
    checkpoint_entry: str = field(default="generator_smooth", metadata={"choices": GENERATOR_ENTRIES, "help": "generator or generator_smooth"})
    resolution: int = 64
    fmaps_base: int = 4096
    fmaps_max: int = 128
    num_images: int = field(default=15000, metadata={"help": "how many images to generate"})
    batch_size: int = 32
    seed: int = field(default=0, metadata={"help": "run seed: image i depends on (seed, i) only"})
    output_dir: str = FACES.images
    image_format: str = field(default="png", metadata={"choices": IMAGE_FORMATS, "help": "png (lossless) or jpg (quality 95, as the original)"})
    trunc_psi: float = 1.0
    trunc_layers: int = 0
    style_mixing_prob: float = field(default=0.0, metadata={
        "help": "probability that an image mixes in a second latent's styles (0.9 mimics the original)"})
    label_mode: str = field(default="zeros", metadata={"choices": LABEL_MODES,
        "help": "labels for a label-conditioned checkpoint: zeros, normal (N(0,1) per image) or fixed"})
    label_value: list[float] = field(default_factory=list, metadata={
        "help": "the label for label_mode fixed, e.g. [0,0,2,0,0,0,0]"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})

    def validate(self) -> None:
        check_device_name(self.device, "[generator] device")
        check_choices(self, "generator")
        for name in ("num_images", "batch_size"):
            if getattr(self, name) < 1:
                raise PipelineError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.style_mixing_prob <= 1.0:
            raise PipelineError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        if self.trunc_psi < 0 or self.trunc_layers < 0:
            raise PipelineError("trunc_psi and trunc_layers must be >= 0")
        if self.label_mode == "fixed" and not self.label_value:
            raise PipelineError("label_mode fixed needs --label-value, e.g. [0,0,2,0,0,0,0]")

    def generator_kwargs(self) -> dict:
        return dict(resolution=self.resolution, fmaps_base=self.fmaps_base, fmaps_max=self.fmaps_max)

    def checkpoint_hint(self) -> str:
        if "fine_tuned" in Path(self.checkpoint).name:  # the v8 dataset samples FineTune-v1
            return "run `run_stylegan_fine_tuning.py --version v1` (stage 6) first, or pass --checkpoint"
        return CELEBA_CHECKPOINT_HINT if self.profile == "celeba256" else EMBEDDED_CHECKPOINT_HINT



@dataclass
class ImageLatents:
    """Per-image random choices: z, and for style mixing a second z and the first layer it replaces;
    for a label-conditioned generator the label (None otherwise)."""

    index: np.ndarray
    z: np.ndarray
    mix_z: np.ndarray
    mix_cut: np.ndarray  # 0 = no mixing
    label: np.ndarray | None = None


def sample_labels(seed: int, indices, label_size: int, mode: str, value=()) -> np.ndarray:
    """[N, label_size] float32 labels; `normal` draws from a stream of its own per (seed, i)."""
    indices = np.asarray(list(indices), dtype=np.int64)
    if mode == "zeros":
        return np.zeros((len(indices), label_size), np.float32)
    if mode == "fixed":
        if len(value) != label_size:
            raise PipelineError(f"label_value has {len(value)} entries, the checkpoint's label has {label_size}")
        return np.tile(np.asarray(value, np.float32), (len(indices), 1))
    if mode != "normal":
        raise PipelineError(f"label_mode must be one of {', '.join(LABEL_MODES)}, got '{mode}'")
    out = np.empty((len(indices), label_size), np.float32)
    for row, i in enumerate(indices):
        out[row] = np.random.default_rng([seed, int(i), 1]).standard_normal(label_size, dtype=np.float32)
    return out


def image_latents(config: "GeneratorConfig", generator, indices) -> ImageLatents:
    """z, mixing and (for a conditional generator) label of each index of the run."""
    latents = sample_latents(config.seed, indices, generator.z_space_dim, generator.num_layers,
                             config.style_mixing_prob)
    if generator.label_size:
        latents.label = sample_labels(config.seed, indices, generator.label_size, config.label_mode,
                                      config.label_value)
    return latents


def sample_latents(seed: int, indices, z_dim: int, num_layers: int, style_mixing_prob: float) -> ImageLatents:
    indices = np.asarray(list(indices), dtype=np.int64)
    z = np.empty((len(indices), z_dim), np.float32)
    mix_z = np.zeros_like(z)
    mix_cut = np.zeros(len(indices), np.int64)
    for row, i in enumerate(indices):
        rng = np.random.default_rng([seed, int(i)])
        z[row] = rng.standard_normal(z_dim, dtype=np.float32)
        if style_mixing_prob > 0 and rng.uniform() < style_mixing_prob:
            mix_z[row] = rng.standard_normal(z_dim, dtype=np.float32)
            mix_cut[row] = rng.integers(1, num_layers)
    return ImageLatents(indices, z, mix_z, mix_cut)


# CPU kernels (oneDNN convolutions and transposed convolutions, GEMM tails) change the last float bits of a
# row with the number of rows in the call (a transposed conv blocks rows by 4); padding every call to a
# multiple of this many rows made w, images and scores bit-identical for any batch size in our measurements
# (batches 1 to 256, the embedded generator, the merged property CNN).
ROW_MULTIPLE = 16


def batch_invariant(fn, x):
    """fn(x) on x (tensor or array) padded with copies of its first row to a multiple of ROW_MULTIPLE rows;
    the padding rows are dropped from the result."""
    n = x.shape[0]
    extra = (-n) % ROW_MULTIPLE
    if extra == 0:
        return fn(x)
    if isinstance(x, torch.Tensor):
        return fn(torch.cat([x, x[:1].expand(extra, *x.shape[1:])]))[:n]
    return fn(np.concatenate([x, np.repeat(x[:1], extra, axis=0)]))[:n]


def map_latents(generator, z: torch.Tensor, label: np.ndarray | None) -> torch.Tensor:
    """w = mapping(z[, label]), batch-invariant; z and label travel as one tensor through the padding."""
    if label is None or not generator.label_size:
        return batch_invariant(generator.mapping, z)
    z_dim = z.shape[1]
    joint = torch.cat([z, torch.from_numpy(label).to(z.device, z.dtype)], dim=1)
    return batch_invariant(lambda x: generator.mapping(x[:, :z_dim], x[:, z_dim:]), joint)


def latents_to_wp(generator, latents: ImageLatents, device, trunc_psi: float, trunc_layers: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, wp) for a batch of latents: mapping, per-image style mixing, then truncation."""
    z = torch.from_numpy(latents.z).to(device)
    w = map_latents(generator, z, latents.label)
    wp = generator.truncation(w)
    cuts = torch.from_numpy(latents.mix_cut).to(device)
    if bool((cuts > 0).any()):
        mix_z = torch.from_numpy(latents.mix_z).to(device)
        wp_mix = generator.truncation(map_latents(generator, mix_z, latents.label))
        layer = torch.arange(wp.shape[1], device=device).view(1, -1, 1)
        use_mix = (cuts.view(-1, 1, 1) > 0) & (layer >= cuts.view(-1, 1, 1))
        wp = torch.where(use_mix, wp_mix, wp)
    return w, generator.truncation(wp, trunc_psi, trunc_layers)


def image_path(output_dir: Path, index: int, image_format: str) -> Path:
    return output_dir / f"{index:06d}.{image_format}"


def build_generator(config: GeneratorConfig, device: torch.device):
    """The checkpoint's generator, strictly loaded; label-conditioned when it has `mapping.label_weight`."""
    path = resolve_repo_path(config.checkpoint)
    state = select_entry(read_checkpoint(path, config.checkpoint_hint()), config.checkpoint_entry, path)
    label_weight = state.get("mapping.label_weight")
    label_size = int(label_weight.shape[0]) if isinstance(label_weight, torch.Tensor) else 0
    generator = StyleGANGenerator(label_size=label_size, **config.generator_kwargs())
    load_state_strict(generator, state, f"{path} [{config.checkpoint_entry}]")
    generator = generator.to(device).eval()
    if label_size and config.label_mode == "fixed" and len(config.label_value) != label_size:
        raise PipelineError(f"label_value has {len(config.label_value)} entries, {path} takes {label_size}")
    if device.type == "cpu":
        generator = generator.to(memory_format=torch.channels_last)
    return generator


@torch.inference_mode()
def generate_images(generator, latents: ImageLatents, config: GeneratorConfig, device) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, H, W, 3] and w [N, w_dim] for one batch of latents."""
    w, wp = latents_to_wp(generator, latents, device, config.trunc_psi, config.trunc_layers)
    images = batch_invariant(generator.synthesis, wp)
    return to_uint8(images), w.float().cpu().numpy()


def run_generation(config: GeneratorConfig, force: bool = False, device: torch.device | None = None,
                   progress: bool = True) -> dict:
    """Generate the missing images of the run, then (re)write latents.npz; returns a summary."""
    device = choose_device(config.device if device is None else device)
    output_dir = resolve_repo_path(config.output_dir)
    generator = build_generator(config, device)
    _check_previous_run(output_dir, config, force)
    output_dir.mkdir(parents=True, exist_ok=True)
    if force:  # images of an earlier, larger run (or in another format) would be read by stage 2 as this run's
        for path in output_dir.iterdir():
            match = IMAGE_NAME.match(path.name)
            if match and (int(match.group(1)) >= config.num_images or path != image_path(output_dir, int(
                    match.group(1)), config.image_format)):
                path.unlink()
    dump_config(config, output_dir / CONFIG_FILE)

    todo = [i for i in range(config.num_images)
            if force or not image_path(output_dir, i, config.image_format).is_file()]
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True, desc="generating")
    for batch_start in range(0, len(todo), config.batch_size):
        indices = todo[batch_start:batch_start + config.batch_size]
        latents = image_latents(config, generator, indices)
        images, _ = generate_images(generator, latents, config, device)
        for i, image in zip(indices, images):
            save_image(image, image_path(output_dir, i, config.image_format))
        bar.update(len(indices))
    bar.close()
    elapsed = time.perf_counter() - start
    write_latent_file(generator, config, output_dir, device)
    _write_preview_grid(output_dir, config)
    return {"generated": len(todo), "skipped": config.num_images - len(todo), "seconds": elapsed,
            "images_per_second": len(todo) / elapsed if elapsed > 0 and todo else 0.0,
            "output_dir": str(output_dir), "device": str(device)}


@torch.inference_mode()
def write_latent_file(generator, config: GeneratorConfig, output_dir: Path, device) -> Path:
    """latents.npz with every image's z and w (recomputed cheaply from the seed, so resume needs no shards)."""
    latents = image_latents(config, generator, range(config.num_images))
    ws = []
    for start in range(0, config.num_images, 1024):
        z = torch.from_numpy(latents.z[start:start + 1024]).to(device)
        label = None if latents.label is None else latents.label[start:start + 1024]
        ws.append(map_latents(generator, z, label).float().cpu().numpy())
    # Keys for labels only with a conditional generator: the base's file stays byte for byte as before.
    extra = {} if latents.label is None else {"label": latents.label, "label_mode": np.str_(config.label_mode)}
    path = output_dir / LATENT_FILE
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, index=latents.index, z=latents.z, w=np.concatenate(ws), mix_z=latents.mix_z,
                     mix_cut=latents.mix_cut, seed=np.int64(config.seed),
                     trunc_psi=np.float64(config.trunc_psi), trunc_layers=np.int64(config.trunc_layers), **extra)
    return path


def load_latent_file(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: latent file not found; run run_original_generator.py first")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise PipelineError(f"{path}: not a readable latent file ({exc}); re-run run_original_generator.py") from None


@torch.inference_mode()
def regenerate(generator, latent_file: dict[str, np.ndarray], indices, device="cpu") -> np.ndarray:
    """Re-create images from a saved latent file (same z, mixing and truncation as when generated)."""
    rows = [int(np.flatnonzero(latent_file["index"] == i)[0]) for i in indices]
    label = latent_file["label"][rows] if "label" in latent_file else None
    latents = ImageLatents(latent_file["index"][rows], latent_file["z"][rows], latent_file["mix_z"][rows],
                           latent_file["mix_cut"][rows], label)
    _, wp = latents_to_wp(generator, latents, device, float(latent_file["trunc_psi"]),
                          int(latent_file["trunc_layers"]))
    return to_uint8(batch_invariant(generator.synthesis, wp))


def _check_previous_run(output_dir: Path, config: GeneratorConfig, force: bool) -> None:
    """Refuse to mix images of two different runs in one folder (unless --force)."""
    previous = output_dir / CONFIG_FILE
    if force or not previous.is_file():
        return
    try:
        old = json.loads(previous.read_text())
    except json.JSONDecodeError:
        return
    keys = ("checkpoint", "checkpoint_entry", "seed", "trunc_psi", "trunc_layers", "style_mixing_prob",
            "image_format", "resolution", "label_mode", "label_value")
    changed = [k for k in keys if k in old and old[k] != getattr(config, k)]
    if changed:
        raise PipelineError(f"{previous}: images there were made with different {', '.join(changed)}; "
                            f"use --force to regenerate or choose another --output-dir")


def _write_preview_grid(output_dir: Path, config: GeneratorConfig, count: int = 64) -> None:
    from common.fileio import load_image

    paths = [image_path(output_dir, i, config.image_format) for i in range(min(count, config.num_images))]
    images = np.stack([load_image(p) for p in paths])
    save_grid(images, Path(grid_png(str(output_dir))), ncols=8)
