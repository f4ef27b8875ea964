"""How does the property CNN's reading of eyes, mouth and pose grow with the number of landmark-labelled faces?

Stage 5 learns eyes / mouth / pose from stage 4's landmark measures of ~2,000 filtered faces. This bench asks
whether its validation r is limited by that count: it takes a finished VectorFind output (the sample shards and
their landmark labels, `label_source = landmarks`), renders the labelled samples again from their saved w,
and trains the stage-5 seven-output CNN (the profile's architecture and training settings: width, learning rate,
batch, epochs, cosine schedule) on growing training sets, with the loss on the three landmark-labelled outputs
only (eye opening, mouth opening, the profile's pose measure; each z-scored). Every size is validated on the same
held-out faces, so the rows compare.

    python bench/property_cnn_label_count.py --output-root DIR [--sizes 1700,7200] [--val 800]

Prints one row per size: faces, seconds, validation r of eyes / mouth / pose at the best epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.config import add_run_arguments, resolve_config  # noqa: E402
from common.training_loop import train_model  # noqa: E402
from property_score_cnn.config import PropertyCnnConfig  # noqa: E402
from property_score_cnn.models import SEVEN_NAMES, build_model, channels_last, to_model_input  # noqa: E402
from property_score_cnn.training import regression_metrics  # noqa: E402
from segmentation.face_geometry import GEOMETRY_COLUMNS  # noqa: E402
from vectorfind.context import build_context  # noqa: E402
from vectorfind.landmarks import load_sample_geometry, target_measures  # noqa: E402
from vectorfind.sampling import load_samples, render  # noqa: E402
from vectorfind.settings import VectorFindConfig  # noqa: E402

TARGETS = ("eyes", "mouth", "pose")


@torch.inference_mode()
def render_samples(generator, w: np.ndarray, batch_size: int = 250) -> torch.Tensor:
    """uint8 NCHW images of the samples, as the sample phase drew them."""
    parts = [render(generator, generator.truncation(torch.from_numpy(w[s:s + batch_size])))
             for s in range(0, len(w), batch_size)]
    return torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()


def landmark_targets(geometry: np.ndarray, pose_measure: str) -> np.ndarray:
    """[N, 7] float32 in SEVEN_NAMES order: the three landmark measures z-scored, the other columns 0 (unused)."""
    targets = np.zeros((len(geometry), len(SEVEN_NAMES)), np.float32)
    for prop, measure in target_measures(pose_measure).items():
        values = geometry[:, GEOMETRY_COLUMNS.index(measure)]
        targets[:, SEVEN_NAMES.index(prop)] = (values - np.nanmean(values)) / np.nanstd(values)
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--sizes", default="1700,7200", help="training-set sizes, comma-separated")
    parser.add_argument("--val", type=int, default=800, help="held-out faces (the same for every size)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.dry_run = False
    torch.set_num_threads(args.threads)
    config = resolve_config(VectorFindConfig, "vectorfind", args)
    cnn = resolve_config(PropertyCnnConfig, "property_cnn", args)
    ctx = build_context(config, progress=False)
    samples = load_samples(ctx.samples_dir, config.num_samples, config.shard_size, ctx.fingerprint)
    geometry = load_sample_geometry(ctx.samples_dir, config.num_samples, config.shard_size, config.landmark_samples,
                                    ctx.fingerprint)
    started = time.perf_counter()
    images = render_samples(ctx.generator, samples.w[:len(geometry)])
    print(f"rendered {len(images)} samples of {ctx.generator_description} in {time.perf_counter() - started:.0f} s")
    targets = torch.from_numpy(landmark_targets(geometry, config.pose_measure))
    usable = np.flatnonzero(np.isfinite(geometry).all(axis=1))
    order = np.random.default_rng(0).permutation(usable)
    val_idx, pool = order[:args.val], order[args.val:]
    columns = [SEVEN_NAMES.index(p) for p in TARGETS]

    def loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(predicted[:, columns], target[:, columns])

    print(f"{'faces':>6} {'seconds':>8} " + " ".join(f"{p:>6}" for p in TARGETS))
    for size in (int(s) for s in args.sizes.split(",")):
        if size > len(pool):
            print(f"{size:>6}: only {len(pool)} labelled faces besides the held-out ones; skipped")
            continue
        settings = cnn.loop_settings()
        started = time.perf_counter()
        result = train_model(
            model_factory=lambda: channels_last(build_model("seven", cnn.resolution, cnn.width_multiplier)),
            inputs=images, targets=targets, train_idx=pool[:size], val_idx=val_idx, loss_fn=loss, settings=settings,
            prepare=to_model_input, metrics_fn=regression_metrics(SEVEN_NAMES),
            criterion_fn=lambda p, t, m: float(loss(p, t)),
            make_scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=cnn.cosine_t_max))
        best = result.rows[result.best_epoch]
        print(f"{size:>6} {time.perf_counter() - started:>8.0f} "
              + " ".join(f"{best[f'{p}_score_corr']:>6.3f}" for p in TARGETS), flush=True)


if __name__ == "__main__":
    main()
