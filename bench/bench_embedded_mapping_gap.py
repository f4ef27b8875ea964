"""How much of the embedded student's error is its mapping network (z -> w)?

For N teacher images, compare the student's rendering of mapping(z) (the paired latent) with its
rendering of a w optimised for that image (`stylegan/inversion.py`, starting from mapping(z)).
If the optimised w is much closer to the teacher, the synthesis network can draw the face and the
mapping is what falls short; if not, the synthesis itself lacks capacity or training.

    python bench/bench_embedded_mapping_gap.py [--num 32] [--steps 100] [--checkpoint PATH] [--grid PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from common import artifacts
from common.config import REPO_ROOT, resolve_config
from common.images import save_grid, to_uint8
from stylegan.checkpoint import load_generator
from stylegan.distillation import student_latents
from stylegan.generate import GeneratorConfig
from stylegan.inversion import project_to_w
from stylegan.teacher_dcgan import load_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / artifacts.EMBEDDED_GENERATOR))
    parser.add_argument("--entry", default="generator_smooth")
    parser.add_argument("--grid", default=None, help="write teacher / mapping(z) / optimised-w rows here")
    args = parser.parse_args()
    config = resolve_config(GeneratorConfig, "generator", profile="embedded")
    student = load_generator(args.checkpoint, args.entry, **config.generator_kwargs())
    teacher = load_teacher()
    z, noise = student_latents(args.num, student.z_space_dim, torch.Generator().manual_seed(args.seed))
    with torch.inference_mode():
        targets = teacher(noise)
        output = student(z)
    mapped_w, mapped = output["w"], output["image"]
    mapped_error = (mapped - targets).abs().flatten(1).mean(dim=1)
    projected_w, projected_error = project_to_w(student, targets, init_w=mapped_w, steps=args.steps, lr=args.lr)
    print(f"{args.num} teacher images; student = {args.checkpoint} [{args.entry}]")
    print(f"L1 to the teacher, mapping(z):          {float(mapped_error.mean()):.4f}")
    print(f"L1 to the teacher, optimised w ({args.steps} steps): {float(projected_error.mean()):.4f}")
    print(f"share of the error the mapping explains: {1 - float(projected_error.mean() / mapped_error.mean()):.0%}")
    print(f"mean |w_opt - mapping(z)|: {float((projected_w - mapped_w).abs().mean()):.4f} "
          f"(mean |mapping(z) - w_avg|: {float((mapped_w - student.truncation.w_avg).abs().mean()):.4f})")
    if args.grid:
        with torch.inference_mode():
            projected = student.synthesis(student.truncation(projected_w))
        rows = []
        for start in range(0, min(args.num, 32), 8):
            rows += [to_uint8(t[start:start + 8]) for t in (targets, mapped, projected)]
        save_grid(np.concatenate(rows), args.grid, ncols=8)
        print(f"grid: {args.grid} (rows: teacher, mapping(z), optimised w)")


if __name__ == "__main__":
    main()
