"""The celeba256 pipeline with stand-in weights, timed: per-stage seconds and images/s on this machine's device.

Runs `run_pipeline.py --profile celeba256 --stand-in-weights` (stages 1-9 and the report at 256 px) in its own output
root, then prints one row per pipeline step: seconds (the run's reports/<run-id>/stage_times.csv), how many images the
step handled (counted from the files it wrote), and images/s. The stand-in checkpoints (stylegan/stand_in.py) have no
real quality, so this measures speed only; with real weights the sizes and the code are the same.

    python bench/gpu_celeba256.py                      # full sizes (configs/celeba256.toml): for a GPU machine
    python bench/gpu_celeba256.py --quick              # quick sizes (configs/quick/celeba256.toml): runs on a CPU
    python bench/gpu_celeba256.py --table-only         # the table of the root's latest finished run, nothing run

Default output roots: quick_runs/celeba256_full (full), quick_runs/celeba256 (--quick, the quick run's own root: a
finished quick run is reused, its stages skip their finished work). --restart starts a new pipeline run (the stages
still reuse finished files: give a fresh --output-root for times of a complete run). The table is also written as
<run folder>/gpu_celeba256.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROFILE = "celeba256"
FULL_ROOT = "quick_runs/celeba256_full"
TABLE_FILE = "gpu_celeba256.csv"


def _files(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0


def _rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        return max(sum(1 for _ in f) - 1, 0)


def step_images(root: Path) -> dict[str, tuple[int, str]]:
    """{step: (images, what they are)} from the files each step wrote under `root` (paths of the resolved config)."""
    from common import artifacts
    from common.config import resolve_config
    from cnn.config import CnnConfig
    from property_score_cnn.config import MODEL_STAGES, PropertyCnnConfig
    from segmentation.segmentation_stage import SegmentationConfig
    from stylegan.generate import GeneratorConfig
    from stylegan_modified.config import FineTuneConfig
    from vectorfind.settings import VectorFindConfig

    def cfg(cls, section, stage=None):
        return resolve_config(cls, section, profile=PROFILE, stage=stage)

    out: dict[str, tuple[int, str]] = {}
    for prefix, stage in (("", None), ("7_v8_", "v8_dataset")):
        gen, cnn, seg = (cfg(GeneratorConfig, "generator", stage), cfg(CnnConfig, "cnn", stage),
                         cfg(SegmentationConfig, "segmentation", stage))
        out[f"{prefix or '1_'}generate"] = (_files(root / gen.output_dir, f"*.{gen.image_format}"), "generated")
        out[f"{prefix or '2_'}cnn_filter"] = (_rows(root / cnn.all_scores_csv), "scored")
        out[f"{prefix or '3_'}segmentation"] = (_files(root / seg.output_dir, "parsing_[0-9]*.png"), "parsed")
    for algorithm in artifacts.SCORE_FILES:
        out[f"4_scores_{algorithm}"] = (_rows(root / artifacts.FACES.scores_csv(algorithm)), "scored")
    out["7_v8_hairstyle"] = (_rows(root / artifacts.V8_FACES.scores_csv("hairstyle")), "scored")
    for kind, stage in MODEL_STAGES.items():
        if kind != "merged":
            pcnn = cfg(PropertyCnnConfig, "property_cnn", stage)
            rows = _rows(root / pcnn.scores_csv) or _rows(root / pcnn.fallback_scores_csv)  # "": the root, no rows
            out[f"5_property_cnn_{kind}"] = (rows * pcnn.max_epochs, f"{rows} x {pcnn.max_epochs} epochs (cap)")
    for version, stage in (("v1", None), ("v8", "v8")):
        ft = cfg(FineTuneConfig, "fine_tuning", stage)
        out[f"6_fine_tune_{version}"] = (ft.max_steps * ft.batch_size, f"{ft.max_steps} steps x batch {ft.batch_size}")
    vf = cfg(VectorFindConfig, "vectorfind")
    out["8_9_vectorfind"] = (vf.num_samples, "samples (+ evaluation)")
    return out


def latest_run(root: Path) -> Path:
    from common.errors import PipelineError
    from common.pipeline import REPORTS

    latest = root / REPORTS / "latest"
    if not latest.is_dir():
        raise PipelineError(f"{root}: no finished pipeline run (no {REPORTS}/latest); run without --table-only")
    return latest.resolve()


def table(root: Path) -> tuple[Path, list[dict]]:
    from common.pipeline import read_times

    run_dir = latest_run(root)
    counts = step_images(root)
    rows = []
    for row in read_times(run_dir):
        seconds = float(row["seconds"])
        images, what = counts.get(row["step"], (0, ""))
        rows.append({"step": row["step"], "stage": row["stage"], "seconds": f"{seconds:.1f}", "images": images,
                     "images_per_s": f"{images / seconds:.2f}" if images and seconds > 0 else "",
                     "counted": what})
    total = sum(float(r["seconds"]) for r in rows)
    rows.append({"step": "total", "stage": "", "seconds": f"{total:.1f}", "images": "", "images_per_s": "",
                 "counted": ""})
    return run_dir, rows


def device_line() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name()} (stages' device = auto)"
    return f"cpu: {os.cpu_count()} cores, torch {torch.get_num_threads()} threads (no CUDA here)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="quick sizes (configs/quick/celeba256.toml); CPU-sized")
    parser.add_argument("--output-root", default=None,
                        help=f"the run's own folder (default {FULL_ROOT}, with --quick quick_runs/{PROFILE})")
    parser.add_argument("--restart", action="store_true", help="start a new pipeline run in the root")
    parser.add_argument("--table-only", action="store_true", help="print the latest run's table; run nothing")
    args = parser.parse_args()

    from common.config import QUICK_ENV
    from common.paths import REPO_ROOT, quick_root, set_output_root

    if args.quick:
        os.environ[QUICK_ENV] = "1"
    root = set_output_root(args.output_root or (quick_root(PROFILE) if args.quick else REPO_ROOT / FULL_ROOT))
    print(f"gpu_celeba256: {'quick' if args.quick else 'full'} sizes, output root {root}; {device_line()}", flush=True)
    if not args.table_only:
        command = [sys.executable, str(REPO / "run_pipeline.py"), "--profile", PROFILE, "--stand-in-weights",
                   "--output-root", str(root), *(["--quick"] if args.quick else []),
                   *(["--restart"] if args.restart else [])]
        code = subprocess.call(command, cwd=REPO)
        if code != 0:
            print(f"gpu_celeba256: the pipeline failed (exit {code}); see its output above", file=sys.stderr)
            return code
    run_dir, rows = table(root)
    columns = ["step", "stage", "seconds", "images", "images_per_s", "counted"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print(f"\nper-stage times of {run_dir} (stand-in weights: speed only)")
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns))
    with open(run_dir / TABLE_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"table: {run_dir / TABLE_FILE}")
    return 0


if __name__ == "__main__":
    from common.errors import run_main

    run_main(main)
