"""Stages 8-9: VectorFind - w-space directions for eyes, mouth and pose, and their evaluation.

    python run_vectorfind.py [all|sample|directions|evaluate|compare ...] [--profile embedded|celeba256] [--force]
                             [--num-samples 40000] [--direction-kind plain|conditional] [--edit-layers 0-7]
                             [--orientation more|original] [--eval-cases 100]

Phases (default: all, in this order):
  sample      latents -> w -> images -> merged property CNN scores, in resumable shards (vectorfind/v8/samples/)
  directions  16 groups, LinearSVC per (property, group) -> vectorfind/v8/property_score_vectors/*.csv
  evaluate    the original's 50-edit test per case -> vectorfind/v8/image_generation_report/
  compare     leakage and drift of plain vs conditional directions, all layers vs a layer range; strips, summary PNG

Several processes (CPU: gloo; GPUs: nccl, one per process) split the sampling by shard and produce exactly the
single-process result:
    torchrun --nproc-per-node 4 run_vectorfind.py
    torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc-per-node 8 run_vectorfind.py   (shared output folder)
"""

import argparse

from common.config import add_config_arguments, config_to_dict, resolve_config
from common.errors import run_main
from vectorfind.sampling import finish_distributed
from vectorfind.settings import VectorFindConfig
from vectorfind.context import build_context
from vectorfind.stage import PHASES, run_phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phases", nargs="*", default=["all"], metavar="PHASE",
                        help=f"all (default) or some of: {', '.join(PHASES)}")
    parser.add_argument("--force", action="store_true", help="redo the named phases instead of resuming")
    add_config_arguments(parser, VectorFindConfig, "vectorfind")
    args = parser.parse_args()
    config = resolve_config(VectorFindConfig, "vectorfind", args)
    phases = list(PHASES) if args.phases == ["all"] else args.phases
    if args.dry_run:
        print(config_to_dict(config))
        print("phases:", ", ".join(phases))
        return 0
    ctx = build_context(config)
    if ctx.rank == 0:
        print(f"generator: {ctx.generator_description}")
    results = run_phases(ctx, phases, force=args.force)
    finish_distributed()  # ranks > 0 stop after sampling; rank 0 ran directions, evaluation and compare alone
    if ctx.rank != 0:
        return 0
    if "sample" in results:
        r = results["sample"]
        print(f"sample: {r['computed']} new samples in {r['seconds']:.1f} s ({r['images_per_second']:.1f} img/s)")
    if "directions" in results:
        acc = results["directions"]["pooled_valid_accuracy"]
        print("SVM validation accuracy (pooled): " + ", ".join(f"{p} {v:.3f}" for p, v in acc.items()))
    if "evaluate" in results:
        r = results["evaluate"]
        corr = ", ".join(f"{p} {v:.3f}" for p, v in r["mean_abs_corr"].items())
        print(f"evaluation: {r['passed']}/{r['cases']} passed ({100 * r['pass_rate']:.1f} %), mean |r| {corr} "
              f"-> {r['report_dir']}")
    if "compare" in results:
        for line in results["compare"].get("lines", []):
            print(line)
    return 0


if __name__ == "__main__":
    run_main(main)
