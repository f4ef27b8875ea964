"""What stage 6 trains on: the images of a folder with their stage-4 labels (v1) or all-zero labels (v8)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from common.errors import PipelineError
from common.fileio import list_numbered_images, load_image, read_csv_checked
from common.freshness import digest
from common.paths import resolve_repo_path
from stylegan_modified.config import LABEL_SIZE, PROPERTY_COLUMNS


@dataclass
class FineTuneDataset:
    img_nos: np.ndarray  # [N] int64
    images: torch.Tensor  # [N, 3, R, R] uint8
    labels: torch.Tensor  # [N, LABEL_SIZE] float32

    def fingerprint(self) -> str:
        """What a run is trained on (stored in its training state, compared on resume): image numbers and labels."""
        return digest(self.img_nos.astype(np.int64), self.labels.numpy())


def list_images(images_dir: Path) -> dict[int, Path]:
    """{img_no: path} of the {img_no:06d}.png|jpg files in a folder."""
    return list_numbered_images(images_dir, "dataset", "run the stages that fill it (v1: stages 1-2; v8: the v8 "
                                                       "dataset, --stage v8_dataset) or pass --images-dir")


def read_label_table(path: Path) -> pd.DataFrame:
    """img_no + the 7 property columns (float32) from a stage-4 scores CSV."""
    if not path.is_file():
        raise PipelineError(f"{path}: labels CSV not found; run compute_property_scores.py (stage 4) or pass "
                            f"--labels-csv")
    frame = read_csv_checked(path, "re-run compute_property_scores.py (stage 4)")
    missing = [c for c in ("img_no", *PROPERTY_COLUMNS) if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; expected img_no and "
                            f"{', '.join(PROPERTY_COLUMNS)} (stage 4's output)")
    frame = frame[["img_no", *PROPERTY_COLUMNS]].apply(pd.to_numeric, errors="coerce")  # text -> NaN, named below
    bad = ~np.isfinite(frame.to_numpy(np.float64)).all(axis=1)
    if bad.any():
        raise PipelineError(f"{path}: {int(bad.sum())} row(s) with empty, non-numeric or NaN values (first at row "
                            f"{int(np.flatnonzero(bad)[0]) + 2}); re-run stage 4")
    if frame["img_no"].duplicated().any():
        dup = int(frame.loc[frame["img_no"].duplicated(), "img_no"].iloc[0])
        raise PipelineError(f"{path}: img_no {dup} appears more than once; re-run stage 4")
    return frame.astype({"img_no": np.int64, **{c: np.float32 for c in PROPERTY_COLUMNS}})


def load_dataset(images_dir: str | Path, labels_csv: str | Path | None, resolution: int,
                 log: Callable[[str], None] = print) -> FineTuneDataset:
    """Images of `images_dir` with their labels. With a labels CSV every row must have its image
    ({img_no:06d}.png|jpg; the CSV's img_path names stage-3 crops, not these); images without a row
    are left out (stage 3/4 may skip faces). Without one, every image gets the all-zero label."""
    images_dir = resolve_repo_path(images_dir)
    available = list_images(images_dir)
    if labels_csv:
        labels_path = resolve_repo_path(labels_csv)
        table = read_label_table(labels_path)
        missing = [int(n) for n in table["img_no"] if int(n) not in available]
        if missing:
            raise PipelineError(f"{labels_path}: labels CSV does not match the images: {len(missing)} of {len(table)} "
                                f"rows have no image in {images_dir} (first: {missing[0]:06d}.png); run stages 2-4 on "
                                f"the same images or pass the matching --images-dir")
        unlabelled = len(available) - len(table)
        if unlabelled:
            log(f"{unlabelled} image(s) in {images_dir} have no row in {labels_path.name} and are not used")
        img_nos = table["img_no"].to_numpy()
        labels = torch.from_numpy(table[list(PROPERTY_COLUMNS)].to_numpy(np.float32))
    else:
        img_nos = np.array(sorted(available), np.int64)
        labels = torch.zeros(len(img_nos), LABEL_SIZE)
    images = torch.empty(len(img_nos), 3, resolution, resolution, dtype=torch.uint8)
    for i, img_no in enumerate(img_nos):
        path = available[int(img_no)]
        image = load_image(path)
        if image.shape != (resolution, resolution, 3):
            raise PipelineError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, the profile expects "
                                f"{resolution}x{resolution}; use the matching --profile or --resolution")
        images[i] = torch.from_numpy(image).permute(2, 0, 1)
    return FineTuneDataset(img_nos.astype(np.int64), images, labels)
