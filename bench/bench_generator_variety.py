"""Variety and sharpness of the embedded generators, side by side: the teacher DCGAN, the base student, FineTune-v1
and FineTune-v8 (those whose files exist under --root), on the same seeded samples.

Latents are shared: the base, v1 and v8 get the same z (its first 100 entries are the teacher's noise, as in the
distillation, so teacher and base draw the same face per seed), v1 and v8 the same N(0, 1) label dims (as stages 7-9
sample them). Per generator (stylegan/variety.py; segmentation/face_geometry.py's landmark model; cnn/annotate.py):

* SD across faces of eye opening, mouth opening, yaw and roll (degrees), over the faces the landmark model found;
* sharpness: median variance of the Laplacian; pixel diversity: mean absolute difference of random pairs;
* MTCNN detection rate (face probability >= 0.9) and the annotator's female / old / glasses fractions (all faces);
* each variety figure's ratio to the teacher's and to the base student's.

Writes the table as CSV and a PNG grid (per generator two rows of 16 samples, same seeds) to --out
(default docs/: docs/generator_variety.{csv,png}).

    python bench/bench_generator_variety.py                       # this checkout's files, 300 samples
    python bench/bench_generator_variety.py --root /tmp/demo --out /tmp/variety
    python bench/bench_generator_variety.py --generator v8_new=/tmp/exp/v8.pth   # more fine-tuned files
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import pandas as pd
import torch

from common import artifacts
from common.config import REPO_ROOT, resolve_config
from common.paths import quick_root, resolve_repo_path, set_output_root
from common.fileio import save_image
from common.images import make_grid, to_uint8
from stylegan.checkpoint import load_generator
from stylegan.distillation import student_latents
from stylegan.generate import GeneratorConfig
from stylegan.teacher_dcgan import load_teacher
from stylegan.variety import variety_figures
from stylegan_modified.config import LABEL_SIZE, FineTuneConfig
from stylegan_modified.models import load_generator_file

FINE_TUNED = {version: run.generator for version, run in artifacts.FINE_TUNE.items()}
RATIO_KEYS = ("eye_opening_sd", "mouth_opening_sd", "yaw_sd", "roll_sd", "sharpness", "pixel_diversity")
GRID_COLUMNS = 16


def seeded_codes(num: int, seed: int, z_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z [num, z_dim] (its first 100 entries the teacher's noise), teacher noise, label dims N(0, 1)."""
    rng = torch.Generator().manual_seed(seed)
    z, noise = student_latents(num, z_dim, rng)
    labels = torch.randn(num, LABEL_SIZE, generator=torch.Generator().manual_seed(seed + 1))
    return z, noise, labels


@torch.inference_mode()
def render(generator, z: torch.Tensor, labels: torch.Tensor | None, batch: int = 100) -> np.ndarray:
    out = []
    for start in range(0, len(z), batch):
        chunk = z[start:start + batch]
        image = generator(chunk) if labels is None else generator(chunk, labels[start:start + batch])
        out.append(to_uint8(image["image"] if isinstance(image, dict) else image))
    return np.concatenate(out)


def sample_generators(num: int, seed: int, entry: str, extra: list[tuple[str, Path, str]],
                      log=print) -> dict[str, np.ndarray]:
    """{name: uint8 [num, 64, 64, 3]} for the teacher and each generator file found."""
    base_kwargs = resolve_config(GeneratorConfig, "generator", profile="embedded").generator_kwargs()
    tuned_kwargs = resolve_config(FineTuneConfig, "fine_tuning", profile="embedded").generator_kwargs()
    z, noise, labels = seeded_codes(num, seed, base_kwargs.get("z_space_dim", 512))
    images = {"teacher": render(load_teacher(), noise, None)}
    base_path = resolve_repo_path(resolve_config(GeneratorConfig, "generator", profile="embedded").checkpoint)
    if base_path.is_file():
        images["base"] = render(load_generator(base_path, "generator_smooth", **base_kwargs), z, None)
    else:
        log(f"{base_path}: not found; base left out")
    files = [(name, resolve_repo_path(rel), entry) for name, rel in FINE_TUNED.items()] + list(extra)
    for name, path, file_entry in files:
        if not path.is_file():
            log(f"{path}: not found; {name} left out")
            continue
        images[name] = render(load_generator_file(path, file_entry, **tuned_kwargs), z, labels)
    return images


def measure(images: np.ndarray, geometry, annotator, seed: int) -> dict[str, float]:
    row = variety_figures(images, geometry, seed=seed)
    if annotator is not None:
        frame = annotator.annotate(list(images))
        row["detection_rate"] = float((frame["face_probability"].fillna(0) >= 0.9).mean())
        row["female"] = float(frame["gender"].mean())
        row["old"] = float(frame["age"].mean())
        row["glasses"] = float(frame["glass"].mean())
    return row


def with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for ref in ("teacher", "base"):
        if ref in table.index:
            for key in RATIO_KEYS:
                if key in table:
                    out[f"{key}_vs_{ref}"] = table[key] / table.loc[ref, key]
    return out


def markdown(table: pd.DataFrame) -> str:
    columns = [("eye_opening_sd", "eye opening SD", 3), ("mouth_opening_sd", "mouth opening SD", 3),
               ("yaw_sd", "yaw SD", 3), ("roll_sd", "roll SD (deg)", 2), ("sharpness", "sharpness", 0),
               ("pixel_diversity", "pixel diversity", 3), ("geometry_found", "landmarks found", 2),
               ("detection_rate", "MTCNN detection", 2), ("female", "female", 3), ("old", "old", 3),
               ("glasses", "glasses", 3)]
    columns = [c for c in columns if c[0] in table]
    lines = ["| generator | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name, row in table.iterrows():
        lines.append(f"| {name} | " + " | ".join(f"{row[key]:.{digits}f}" for key, _, digits in columns) + " |")
    for ref in ("teacher", "base"):
        ratio_cols = [k for k in RATIO_KEYS if f"{k}_vs_{ref}" in table]
        if not ratio_cols:
            continue
        lines += ["", f"Ratio to the {ref}:", "",
                  "| generator | " + " | ".join(ratio_cols) + " |", "|---|" + "---|" * len(ratio_cols)]
        for name, row in table.iterrows():
            lines.append(f"| {name} | " + " | ".join(f"{row[f'{k}_vs_{ref}']:.2f}" for k in ratio_cols) + " |")
    return "\n".join(lines)


def labelled_grid(images: dict[str, np.ndarray], columns: int = GRID_COLUMNS, rows: int = 2) -> np.ndarray:
    """Per generator a title strip and `rows` x `columns` samples (the same seeds in every block)."""
    blocks = []
    for name, batch in images.items():
        grid = make_grid(batch[:columns * rows], columns)
        strip = np.full((18, grid.shape[1], 3), 255, np.uint8)
        cv2.putText(strip, name, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        blocks += [strip, grid]
    return np.concatenate(blocks)


def parse_extra(values: list[str]) -> list[tuple[str, Path, str]]:
    out = []
    for value in values:
        name, _, rest = value.partition("=")
        path, _, entry = rest.partition("@")
        if not name or not path:
            raise SystemExit(f"--generator wants NAME=PATH[@entry], got '{value}'")
        out.append((name, Path(path), entry or "generator"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", "--output-root", dest="root", default=None,
                        help="checkout or pipeline output folder to read from (default: the repository)")
    parser.add_argument("--quick", action="store_true", help="the quick run's output root (quick_runs/<profile>), 60 faces")
    parser.add_argument("--num", type=int, default=None, help="faces per generator (default 300; 60 with --quick)")
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--entry", default="generator",
                        help="entry of the v1 / v8 files (generator: what stages 7-10 sample; or generator_smooth)")
    parser.add_argument("--generator", action="append", default=[], metavar="NAME=PATH[@entry]",
                        help="also measure this fine-tuned (label-conditioned) generator file")
    parser.add_argument("--out", default=str(REPO_ROOT / "docs"),
                        help="folder for generator_variety.{csv,png} (relative: under the output root)")
    parser.add_argument("--no-annotator", action="store_true", help="skip MTCNN and the annotator's fractions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", default="embedded",
                        help="the pipeline passes its profile; the teacher and base exist for embedded only")
    args = parser.parse_args()
    if args.profile != "embedded":
        print(f"generator variety: the embedded profile's generators only; nothing to do for {args.profile}")
        return
    root = set_output_root(args.root if args.root else (quick_root(args.profile) if args.quick else None))
    args.num = args.num or (60 if args.quick else 300)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    images = sample_generators(args.num, args.seed, args.entry, parse_extra(args.generator))
    from segmentation.face_geometry import FaceGeometry

    geometry = FaceGeometry()
    annotator = None
    if not args.no_annotator:
        from cnn.annotate import FaceAnnotator

        annotator = FaceAnnotator()
    rows = {}
    for name, batch in images.items():
        rows[name] = measure(batch, geometry, annotator, args.seed)
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[name].items()), flush=True)
    table = with_ratios(pd.DataFrame.from_dict(rows, orient="index"))
    table.index.name = "generator"
    out = resolve_repo_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.round(5).to_csv(out / "generator_variety.csv")
    save_image(labelled_grid(images), out / "generator_variety.png")
    print(f"\n{args.num} samples per generator (seed {args.seed}; v1 / v8 entry '{args.entry}', label dims N(0, 1)); "
          f"root {root}\n")
    print(markdown(table))
    print(f"\n-> {out / 'generator_variety.csv'}, {out / 'generator_variety.png'} "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
