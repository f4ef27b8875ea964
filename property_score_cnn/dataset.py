"""What a property-score CNN learns from: stage 4's scores CSV, checked, and the generator's images it lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.errors import PipelineError
from common.fileio import load_images as load_rgb_images
from common.fileio import list_numbered_images, read_csv_checked


def read_scores_csv(path: Path, names: tuple[str, ...], producer: str) -> pd.DataFrame:
    """img_no and the `{name}_score` columns of a stage-4 CSV, checked; any problem is one line."""
    if not path.is_file():
        raise PipelineError(f"{path}: scores file not found; run {producer} first (or pass the file's path)")
    frame = read_csv_checked(path, f"re-run {producer}")
    columns = ["img_no", *(f"{n}_score" for n in names)]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)} "
                            f"(re-run {producer})")
    if frame.empty:
        raise PipelineError(f"{path}: no rows; re-run {producer} on a non-empty image set")
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if column == "img_no" and not bad.any():
            bad |= (values != values.round()).to_numpy() | (values < 0).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PipelineError(f"{path}: row {row + 2} has {column} = '{frame[column].iloc[row]}'; expected "
                                + ("a non-negative image number" if column == "img_no" else "a finite number")
                                + f" (re-run {producer})")
        frame[column] = values.astype(int) if column == "img_no" else values.astype(np.float64)
    if frame["img_no"].duplicated().any():
        img_no = int(frame.loc[frame["img_no"].duplicated(), "img_no"].iloc[0])
        raise PipelineError(f"{path}: img_no {img_no} appears more than once; re-run {producer}")
    return frame[columns].reset_index(drop=True)


def find_images(img_nos: np.ndarray, images_dir: Path, scores_csv: Path) -> list[Path]:
    """The generator's image for each img_no (the scores CSV's img_path names the 224 crops instead)."""
    available = list_numbered_images(images_dir, "image", f"it must hold the images {scores_csv} lists (run stages "
                                                          f"1-2, or pass --images-dir)")
    paths = [available[int(n)] for n in img_nos if int(n) in available]
    missing = [f"{int(n):06d}.png" for n in img_nos if int(n) not in available]
    if missing:
        raise PipelineError(f"{images_dir}: {len(missing)} image(s) listed in {scores_csv} are missing "
                            f"(first: {missing[0]}); pass the --images-dir they were generated in, "
                            f"or re-run stages 3-4 on this folder")
    return paths


def load_images(paths: list[Path], resolution: int, progress: bool = True) -> torch.Tensor:
    """[N, 3, R, R] uint8; every file checked (size, mode, not truncated) by common.fileio.load_images."""
    return torch.from_numpy(load_rgb_images(paths, resolution, progress)).permute(0, 3, 1, 2).contiguous()


@dataclass
class Dataset:
    scores: pd.DataFrame
    paths: list[Path]
    images: torch.Tensor
    targets: torch.Tensor
    source: Path


def load_dataset(scores_csv: Path, images_dir: Path, names: tuple[str, ...], resolution: int, producer: str
                 ) -> Dataset:
    scores = read_scores_csv(scores_csv, names, producer)
    paths = find_images(scores["img_no"].to_numpy(), images_dir, scores_csv)
    images = load_images(paths, resolution)
    targets = torch.tensor(scores[[f"{n}_score" for n in names]].to_numpy(np.float32))
    return Dataset(scores, paths, images, targets, scores_csv)

