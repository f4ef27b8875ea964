"""VectorFind speed: sampling + scoring images/s against the original's way, and the 48 SVM fits.

Sampling (same generator and merged-CNN weights, same machine, same run, printed as a ratio):
  ours      vectorfind.sampling.sample_batch: batch 256, eval mode, inference_mode, in-memory scoring in batches
  original  generation in chunks of 20 with inner batch 4, then each image scored alone (batch 1) with the
            CNN in train mode (dropout on) and autograd on, as the original's loop
Both wall time and this process's CPU time are reported: on a shared machine wall time depends on the neighbours.
The merged CNN is the trained file when present, else random weights of the profile's layout (same cost).

SVMs: all 48 LinearSVC fits (3 properties x 16 groups, top/bottom 20 %) on synthetic w with planted directions,
n = 40,000 and 240,000, without and with sklearnex's patch_sklearn(), and with 2 joblib processes.

    python bench/bench_vectorfind.py [--images 512] [--baseline-images 60] [--svm-sizes 40000 240000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from common.config import resolve_config, resolve_repo_path
from common.images import to_uint8
from vectorfind.directions import SCORE_NAMES
from vectorfind.models import choose_generator, load_chosen_generator, module_scorer
from vectorfind.sampling import sample_batch, sample_codes
from vectorfind.settings import VectorFindConfig
from vectorfind.svm import compute_medians, fit_directions


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def merged_cnn(config: VectorFindConfig, resolution: int):
    from property_score_cnn import load_property_cnn, score_images
    from property_score_cnn.models import build_model
    from property_score_cnn.config import MODEL_STAGES, PropertyCnnConfig

    path = resolve_repo_path(config.property_cnn)
    if path.is_file():
        return load_property_cnn(path, resolution), score_images, f"trained {path.name}"
    seven, hairstyle = (resolve_config(PropertyCnnConfig, "property_cnn", profile=config.profile,
                                       stage=MODEL_STAGES[kind]).width_multiplier for kind in ("seven", "hairstyle"))
    torch.manual_seed(0)
    model = build_model("merged", resolution, seven, hairstyle).eval()
    return model, score_images, f"random weights, widths {seven}/{hairstyle} (no trained file yet)"


def bench_sampling(config: VectorFindConfig, images: int, baseline_images: int) -> dict:
    device = torch.device("cpu")
    choice = choose_generator(config.generator, config.profile)
    generator = load_chosen_generator(choice, device)
    model, score_images, cnn_note = merged_cnn(config, generator.resolution)
    scorer = module_scorer(model, 256, lambda m, x, batch_size: score_images(m, x, batch_size, "cpu"))
    def ours():
        for start in range(0, images, 256):
            sample_batch(generator, scorer, 0, range(start, min(start + 256, images)), device)

    from property_score_cnn.models import to_model_input

    def original():
        z, labels = sample_codes(1, range(baseline_images), generator.z_space_dim, generator.label_size)
        model.train()
        for chunk in range(0, baseline_images, 20):
            for start in range(chunk, min(chunk + 20, baseline_images), 4):
                zt = torch.from_numpy(z[start:start + 4])
                lt = torch.from_numpy(labels[start:start + 4]) if generator.label_size else None
                with torch.no_grad():
                    out = to_uint8(generator.synthesis(generator.truncation(generator.mapping(zt, lt))))
                for image in out:
                    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
                    model(to_model_input(x)).detach()
        model.eval()

    # the baseline first: it needs autograd-capable tensors, and inference_mode leaves some cached behind
    base_wall, base_cpu = timed(original)
    sample_batch(generator, scorer, 0, range(16), device)  # warm-up
    ours_wall, ours_cpu = timed(ours)
    return {"generator": choice.describe(), "property_cnn": cnn_note, "threads": torch.get_num_threads(),
            "ours_images": images, "ours_img_per_s_wall": images / ours_wall, "ours_img_per_cpu_s": images / ours_cpu,
            "original_images": baseline_images, "original_img_per_s_wall": baseline_images / base_wall,
            "original_img_per_cpu_s": baseline_images / base_cpu,
            "ratio_wall": (images / ours_wall) / (baseline_images / base_wall),
            "ratio_cpu": (images / ours_cpu) / (baseline_images / base_cpu)}


def planted(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.standard_normal((512, len(SCORE_NAMES))))
    w = rng.standard_normal((n, 512)).astype(np.float32)
    scores = (w @ directions + 0.5 * rng.standard_normal((n, len(SCORE_NAMES)))).astype(np.float32)
    return w, scores, directions.T


def bench_svms(sizes) -> list[dict]:
    import sklearn

    rows = []
    for n in sizes:
        w, scores, truth = planted(n)
        medians = compute_medians(scores)
        for label, jobs, patched in (("sklearn", 1, False), ("sklearnex", 1, True), ("sklearnex, 2 jobs", 2, True)):
            if patched:
                from sklearnex import patch_sklearn

                patch_sklearn(verbose=False)
            else:
                from sklearnex import unpatch_sklearn

                unpatch_sklearn()
            found = [None]

            def fit():
                found[0] = fit_directions(w, scores, medians, jobs=jobs)

            wall, cpu = timed(fit)
            cosine = min(float(v @ truth[SCORE_NAMES.index(p)]) for (p, _), v in found[0].plain.items())
            rows.append({"n": n, "variant": label, "seconds_wall": wall, "seconds_cpu_main": cpu,
                         "fits": len(found[0].plain) + len(found[0].attributes), "min_cosine_to_planted": cosine,
                         "sklearn": sklearn.__version__})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="embedded")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--baseline-images", type=int, default=60)
    parser.add_argument("--svm-sizes", type=int, nargs="*", default=[40000, 240000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-sampling", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = resolve_config(VectorFindConfig, "vectorfind", profile=args.profile)
    if not args.skip_sampling:
        result = bench_sampling(config, args.images, args.baseline_images)
        print(json.dumps(result, indent=2), flush=True)
        print(f"sampling + scoring: ours {result['ours_img_per_s_wall']:.1f} img/s, original's way "
              f"{result['original_img_per_s_wall']:.1f} img/s -> {result['ratio_wall']:.1f}x wall, "
              f"{result['ratio_cpu']:.1f}x per CPU second")
    if args.svm_sizes:
        for row in bench_svms(args.svm_sizes):
            print(f"48 SVMs (+4 attribute SVMs) at n={row['n']}, {row['variant']}: {row['seconds_wall']:.1f} s")


if __name__ == "__main__":
    main()
