"""Images/s of the batched property-CNN scoring against the original's way of scoring, as a ratio.

Ours: `score_images` - batch 256, eval mode, inference_mode, channels-last, cuda when available.
Baseline (the original's way): one image at a time in a Python loop, the model left in training mode
(dropout on), each image converted on its own (uint8 -> [0, 1] -> (x - 0.5) / 0.5) under torch.no_grad.
Same merged 8-output model and weights, same images, same machine and run.

    python bench/bench_property_cnn.py [--resolutions 64 256] [--seconds 20] [--model FILE] [--width W]

Without --model the weights are random in the layout of the profile (64 px: the embedded profile's
widths from configs/embedded.toml; 256 px: the original's layout); speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from common.config import resolve_config
from property_score_cnn.models import MergedPropertyScoreCNN
from common.devices import choose_device
from property_score_cnn.scoring import load_property_cnn, score_images
from property_score_cnn.config import MODEL_STAGES, PropertyCnnConfig

OUR_BATCH = 256


def build(resolution: int, model_path: str | None, width: float | None) -> torch.nn.Module:
    if model_path:
        return load_property_cnn(model_path, resolution)
    if width is not None:
        widths = (width, width)
    elif resolution == 64:
        widths = tuple(resolve_config(PropertyCnnConfig, "property_cnn", profile="embedded", stage=stage).width_multiplier
                       for stage in (MODEL_STAGES["seven"], MODEL_STAGES["hairstyle"]))
    else:
        widths = (1.0, 1.0)
    torch.manual_seed(0)
    return MergedPropertyScoreCNN(resolution, *widths)


def original_way(model: torch.nn.Module, images: torch.Tensor, device: torch.device, seconds: float) -> float:
    """Batch 1, training mode, per-image conversion; images/s over about `seconds`."""
    model.to(device, memory_format=torch.contiguous_format).train()
    done, start = 0, time.perf_counter()
    with torch.no_grad():
        while True:
            for image in images:
                x = (image.float() / 255.0 - 0.5) / 0.5
                model(x.unsqueeze(0).to(device)).cpu().numpy()
                done += 1
                if time.perf_counter() - start >= seconds and done >= 2:
                    return done / (time.perf_counter() - start)


def batched_way(model: torch.nn.Module, images: torch.Tensor, device: torch.device, seconds: float) -> float:
    score_images(model, images[:8], batch_size=OUR_BATCH, device=device)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        score_images(model, images, batch_size=OUR_BATCH, device=device)
        done += len(images)
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seconds", type=float, default=20.0, help="time per measurement")
    parser.add_argument("--model", default=None, help="a property CNN file (default: random weights)")
    parser.add_argument("--width", type=float, default=None, help="conv width multiplier of the random model")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args()
    device = choose_device(args.device or "auto")
    print(f"device {device}, torch threads {torch.get_num_threads()}, ours batch {OUR_BATCH}")
    for resolution in args.resolutions:
        model = build(resolution, args.model, args.width)
        images = torch.randint(0, 256, (OUR_BATCH, 3, resolution, resolution), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        baseline = original_way(model, images, device, args.seconds)
        ours = batched_way(model, images, device, args.seconds)
        print(f"{resolution} px merged CNN ({type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} "
              f"weights): original way {baseline:.1f} img/s, score_images {ours:.1f} img/s -> {ours / baseline:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
