"""Images/s of our stage-1 generation against a baseline that samples like the original.

Ours: batch 32, eval mode, inference_mode, channels_last on CPU, fixed noise, no mixing.
Baseline (the original's sampling): batch 4, training mode (w_avg updates, style mixing with
probability 0.9), torch.no_grad. Same weights, same machine, same run; printed as a ratio.

    python bench/bench_generation.py [--resolutions 64 256] [--seconds 20] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from stylegan.stylegan_generator import StyleGANGenerator

ARCHS = {64: dict(fmaps_base=4096, fmaps_max=128), 256: dict(fmaps_base=16384, fmaps_max=512)}


def images_per_second(step, batch: int, seconds: float) -> float:
    step()  # warm-up (allocations, kernel selection)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += batch
    return done / (time.perf_counter() - start)


def bench(resolution: int, seconds: float, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    torch.manual_seed(0)
    base = StyleGANGenerator(resolution, **ARCHS[resolution]).to(device)
    ours = StyleGANGenerator(resolution, **ARCHS[resolution]).to(device)
    ours.load_state_dict(base.state_dict())
    ours.eval()
    if device.type == "cpu":
        ours = ours.to(memory_format=torch.channels_last)
    ours = ours.to(dtype)

    def baseline_step():
        base.train()
        with torch.no_grad():
            base(torch.randn(4, 512, device=device), style_mixing_prob=0.9)["image"].cpu()

    def ours_step():
        with torch.inference_mode():
            ours.synthesis(ours.truncation(ours.mapping(torch.randn(32, 512, device=device, dtype=dtype))))\
                .float().cpu()

    return images_per_second(baseline_step, 4, seconds), images_per_second(ours_step, 32, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seconds", type=float, default=15.0, help="time per measurement")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="our generator's dtype")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; ours in {args.dtype}")
    for res in args.resolutions:
        baseline, ours = bench(res, args.seconds, device, dtype)
        print(f"{res:4d} px: baseline (batch 4, train mode, mixing 0.9) {baseline:8.2f} img/s | "
              f"ours (batch 32, eval, inference_mode) {ours:8.2f} img/s | ratio {ours / baseline:5.2f}x")


if __name__ == "__main__":
    main()
