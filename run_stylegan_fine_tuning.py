"""Stage 6: fine-tune the StyleGAN into the label-conditioned FineTune-v1, then FineTune-v8.

    python run_stylegan_fine_tuning.py --version v1 [--profile embedded|celeba256] [--max-steps N] [--max-minutes M]
    python run_stylegan_fine_tuning.py --version v8
    python run_stylegan_fine_tuning.py --version v1 --evaluate 1000   # female fraction etc. of v1 vs the base

v1 reads the profile's base checkpoint, the stage-2 filtered images and the stage-4 scores
(segmentation/property_score_results/all_scores_v2.csv; --labels v1 for the v1
scores) and writes stylegan_modified/stylegan_gen_fine_tuned_v1.pth and ..._dis_... . v8 reads those
and stylegan/generated_face_images_filtered/ and writes stylegan/models/stylegan_{gen,dis}_fine_tuned_v8.pth.
Settings: [fine_tuning] (v1), with [v8.fine_tuning] over it for v8, in configs/<profile>.toml. The run folder keeps the full
training state, train_log.csv, preview grids and train_curves.png; re-running resumes (--force restarts).
"""

import argparse
import sys

import numpy as np

from common.config import add_config_arguments, config_to_dict, resolve_config
from common.errors import PipelineError, run_main
from stylegan_modified.config import FineTuneConfig
from stylegan_modified.evaluation import evaluate_fine_tuning
from stylegan_modified.stage import run_fine_tuning

# --version picks the run: v1 is [fine_tuning], v8 the named run `v8` ([v8.fine_tuning] and FineTune-v8's paths over it)
STAGES = {"v1": None, "v8": "v8"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="discard the run folder's state and start again")
    parser.add_argument("--evaluate", type=int, default=0, metavar="N",
                        help="after training, score N samples of the previous and the new generator")
    # --help shows the values of the run --version picks
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--version")
    stage = STAGES.get(pre.parse_known_args()[0].version)
    add_config_arguments(parser, FineTuneConfig, "fine_tuning", sys.argv[1:] + (["--stage", stage] if stage else []))
    args = parser.parse_args()
    version = args.version or "v1"
    if version not in STAGES:
        raise PipelineError(f"--version must be one of {', '.join(STAGES)}, got '{version}'")
    config = resolve_config(FineTuneConfig, "fine_tuning", args, stage=STAGES[version])
    if args.dry_run:
        print(config_to_dict(config))
        return 0
    summary = run_fine_tuning(config, force=args.force)
    row = {k: v for k, v in summary.last_row.items() if isinstance(v, (int, float)) and not np.isnan(v)}
    print(f"{config.version}: step {summary.step} of {config.max_steps} on {summary.images} images, "
          f"{summary.train_seconds / 60:.1f} min; last log row: "
          + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "idx")))
    if summary.exported:
        print("exported " + ", ".join(str(p) for p in summary.exported))
    else:
        print("not finished; re-run the same command to continue")
    if args.evaluate and summary.exported:
        evaluate_fine_tuning(config, args.evaluate)
    return 0


if __name__ == "__main__":
    run_main(main)
