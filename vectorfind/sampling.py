"""Stage 8, sampling: latents -> w -> image -> 8 property scores, stored in shards.

Sample i's latent is a function of (seed, i) alone: z is stage 1's z for that pair (stylegan.generate.sample_latents)
and the label dims of a conditional generator come from the stream seeded by (seed, i, 1). Images are generated
in batches and scored in memory (no file round trip). Shard s holds samples [s * shard_size, (s + 1) * shard_size):
a killed run resumes at the first missing shard, a re-run skips finished ones, and since a shard's content depends
only on its index range, the result is the same whatever the batch size or the number of processes.

Under torchrun (WORLD_SIZE > 1) process r computes the shards with index % world_size == r; every process then
reads the same complete set of shard files, so the merge is exactly the single-process result.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from common.errors import PipelineError
from common.fileio import atomic_path
from common.freshness import checkpoint_digest, record_text, what_differs
from common.images import to_uint8
from stylegan.generate import batch_invariant, sample_latents

from vectorfind.models import Scorer

SHARD_PATTERN = "shard_{start:07d}_{end:07d}.npz"
LABEL_STREAM = 1  # third seed word of the label-dims stream (z uses the pair (seed, i) itself)


@dataclass
class Samples:
    w: np.ndarray        # [N, 512] float32
    scores: np.ndarray   # [N, 8] float32, merged CNN output order
    seed: int


def sample_codes(seed: int, indices, z_dim: int, label_size: int) -> tuple[np.ndarray, np.ndarray]:
    """z [N, z_dim] and label dims [N, label_size], both N(0, 1), for the given sample indices."""
    indices = np.asarray(list(indices), dtype=np.int64)
    z = sample_latents(seed, indices, z_dim, 1, 0.0).z
    labels = np.empty((len(indices), label_size), np.float32)
    if label_size:
        for row, i in enumerate(indices):
            labels[row] = np.random.default_rng([seed, int(i), LABEL_STREAM]).standard_normal(label_size,
                                                                                              dtype=np.float32)
    return z, labels


def score(scorer: Scorer, images: np.ndarray) -> np.ndarray:
    return np.asarray(batch_invariant(scorer, images), np.float32)


def codes_to_w(generator, z: np.ndarray, labels: np.ndarray, device) -> torch.Tensor:
    z_dim = z.shape[1]
    codes = torch.from_numpy(np.concatenate([z, labels], axis=1)).to(device)

    def mapping(x: torch.Tensor) -> torch.Tensor:
        return generator.mapping(x[:, :z_dim], x[:, z_dim:] if generator.label_size else None)

    return batch_invariant(mapping, codes)


def render(generator, wp: torch.Tensor) -> np.ndarray:
    """uint8 [N, H, W, 3] images of per-layer codes wp [N, num_layers, 512] (fixed noise, psi 1)."""
    return to_uint8(batch_invariant(generator.synthesis, wp.contiguous()))


@torch.inference_mode()
def sample_batch(generator, scorer: Scorer, seed: int, indices, device) -> tuple[np.ndarray, np.ndarray]:
    z, labels = sample_codes(seed, indices, generator.z_space_dim, generator.label_size)
    w = codes_to_w(generator, z, labels, device)
    images = render(generator, generator.truncation(w))
    return w.float().cpu().numpy(), score(scorer, images)


def shard_ranges(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, num_samples)) for start in range(0, num_samples, shard_size)]


def shard_path(samples_dir: Path, start: int, end: int) -> Path:
    return samples_dir / SHARD_PATTERN.format(start=start, end=end)


def read_shard(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The shard's arrays, or None when it is missing; a shard of another run is a one-line error."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            shard = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # BadZipFile: an empty or cut file
        raise PipelineError(f"{path}: unreadable shard ({exc}); delete it or re-run with --force") from None
    differs = what_differs(str(shard.get("fingerprint")), fingerprint)
    if differs:
        raise PipelineError(f"{path}: made by another run ({differs}); re-run with --force to resample")
    for key in ("w", "scores"):  # a sample shard's arrays (a landmark geometry shard has neither; NaN is allowed
        values = shard.get(key)    # there for faces the landmark model did not find)
        if values is not None and (values.dtype.kind != "f" or not np.isfinite(values).all()):
            raise PipelineError(f"{path}: '{key}' holds values that are not finite numbers (NaN / inf); delete the "
                                f"file and re-run run_vectorfind.py, which samples it again")
    return shard


def write_shard(path: Path, start: int, end: int, seed: int, w: np.ndarray, scores: np.ndarray,
                fingerprint: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, start=np.int64(start), end=np.int64(end), seed=np.int64(seed), w=w, scores=scores,
                     fingerprint=np.str_(fingerprint))


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (gloo on CPU, nccl with CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def wait_for_all() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish_distributed() -> None:
    """Leave the process group (local; the sample phase's barriers already synchronised the shards)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sample_shards(generator, scorer: Scorer, samples_dir: Path, num_samples: int, shard_size: int, seed: int,
                  batch_size: int, fingerprint: str, device, force: bool = False, rank: int = 0, world: int = 1,
                  progress: bool = True, desc: str = "sampling") -> int:
    """Compute this process's missing shards; returns how many samples it computed."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    mine = [r for s, r in enumerate(shard_ranges(num_samples, shard_size)) if s % world == rank]
    todo = [(a, b) for a, b in mine if force or read_shard(shard_path(samples_dir, a, b), fingerprint) is None]
    total = sum(b - a for a, b in todo)
    bar = tqdm(total=total, unit="img", disable=not progress or total == 0, dynamic_ncols=True,
               desc=desc if world == 1 else f"{desc} [rank {rank}/{world}]")
    try:
        for start, end in todo:
            ws, scores = [], []
            for batch_start in range(start, end, batch_size):
                w, s = sample_batch(generator, scorer, seed, range(batch_start, min(batch_start + batch_size, end)),
                                    device)
                ws.append(w)
                scores.append(s)
                bar.update(len(w))
            write_shard(shard_path(samples_dir, start, end), start, end, seed, np.concatenate(ws),
                        np.concatenate(scores), fingerprint)
    finally:
        bar.close()  # also when a write fails: the error line then starts a line of its own
    return total


def load_samples(samples_dir: Path, num_samples: int, shard_size: int, fingerprint: str) -> Samples:
    ws, scores, seeds = [], [], set()
    for start, end in shard_ranges(num_samples, shard_size):
        shard = read_shard(shard_path(samples_dir, start, end), fingerprint)
        if shard is None:
            raise PipelineError(f"{shard_path(samples_dir, start, end)}: shard missing; run the sample phase "
                                f"(run_vectorfind.py sample) first")
        if shard["w"].shape[0] != end - start or shard["scores"].shape[0] != end - start:
            raise PipelineError(f"{shard_path(samples_dir, start, end)}: holds {shard['w'].shape[0]} samples, "
                                f"expected {end - start}; re-run with --force")
        ws.append(shard["w"])
        scores.append(shard["scores"])
        seeds.add(int(shard["seed"]))
    return Samples(np.concatenate(ws), np.concatenate(scores), seeds.pop())


def run_fingerprint(generator_path: Path, cnn_identity: str, seed: int, label_size: int) -> str:
    """What every shard of a run is made from, stored in each (the generator by its tensors, so a re-export of the
    same weights, whose bytes differ, still matches)."""
    return record_text({"generator": generator_path.name, "generator_digest": checkpoint_digest(generator_path),
                        "property_cnn": cnn_identity, "seed": seed, "label_size": label_size})
