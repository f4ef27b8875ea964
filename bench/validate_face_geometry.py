"""Validate the geometric face measures on faces whose truth is known (prints and writes the table).

    python bench/validate_face_geometry.py [--faces 40] [--generator PATH] [--out docs/face_geometry_validation]

Faces come from a generator (default: the committed embedded base). Each face is rotated by known angles
(roll), its eyes and its mouth stretched open or shut by known factors, and relit (brightness, gamma, tint);
segmentation/geometry_validation.py makes the images, segmentation/face_geometry.py measures them.
Printed: the mean change of each measure per warp step with the fraction of faces that follow the whole ladder
monotonically, and the change under lighting-only edits in absolute units and in SDs of the measure across faces.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import artifacts
from common.fileio import atomic_write_csv  # noqa: E402
from segmentation.face_geometry import FaceGeometry  # noqa: E402
from segmentation.geometry_validation import validation_table  # noqa: E402
from vectorfind.models import choose_generator, load_chosen_generator  # noqa: E402
from vectorfind.sampling import codes_to_w, render, sample_codes  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=40)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--generator", default=artifacts.EMBEDDED_GENERATOR)
    parser.add_argument("--out", default="docs/face_geometry_validation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = load_chosen_generator(choose_generator(args.generator, "embedded"), torch.device("cpu"))
    with torch.inference_mode():
        z, labels = sample_codes(args.seed, range(args.faces), generator.z_space_dim, generator.label_size)
        faces = render(generator, generator.truncation(codes_to_w(generator, z, labels, "cpu")))
    started = time.perf_counter()
    response, lighting = validation_table(faces, FaceGeometry())
    pd.set_option("display.width", 160)
    print(f"{args.faces} faces of {args.generator}, {time.perf_counter() - started:.0f} s\n")
    print(response.round(4).to_string(index=False))
    print()
    print(lighting.round(4).to_string(index=False))
    out = ROOT / args.out
    atomic_write_csv(response, out / "warp_response.csv", index=False)
    atomic_write_csv(lighting, out / "lighting_change.csv", index=False)
    print(f"\n-> {out}/warp_response.csv, lighting_change.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
