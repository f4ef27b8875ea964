"""Stage 2: property CNN filter (gender / quality; with --stage v8_dataset also age / glass).

    python run_cnn.py [--profile embedded|celeba256] [--stage v8_dataset] [--retrain] [--force]
                      [--properties '{"gender": {"keep_min": 0.7}, "quality": {"keep_min": 0.9}}']

The config's `properties` table names the binary properties, their CNNs, label columns and keep
rule (cnn/properties.py). Labels: cnn/synthesize_results_quality_and_gender.csv (img_name, quality,
gender) or, for the v8 dataset, stylegan/generate_dataset/scores_labeled_first_2k.csv (idx, gender,
quality, age, glass); the embedded profile writes them with the bundled annotator when missing (hand
labels are never overwritten). Trains 5 fold models per property (reused on re-runs; a killed run
resumes at the next fold), scores the remaining images, writes the merged scores CSV, copies the
kept images and draws the funnel and the kept-vs-rejected grid.
"""

import argparse

from cnn.config import CnnConfig
from cnn.stage import plan, run_filter_stage
from common.config import add_config_arguments, config_to_dict, resolve_config
from common.errors import run_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retrain", action="store_true", help="train the CNNs again instead of reusing them")
    parser.add_argument("--force", action="store_true",
                        help="redo everything: annotator labels (never hand labels), training, inference")
    add_config_arguments(parser, CnnConfig, "cnn")
    args = parser.parse_args()
    config = resolve_config(CnnConfig, "cnn", args)
    if args.dry_run:
        print(config_to_dict(config))
        print("\n".join(plan(config)))
        return 0
    summary = run_filter_stage(config, retrain=args.retrain, force=args.force)
    for prop, values in summary.fold_auroc.items():
        shown = " ".join(f"{v:.3f}" for v in values)
        mean = sum(values) / len(values) if values else float("nan")
        note = f"; restart cap hit in {summary.restart_caps_hit[prop]} fold(s)" if summary.restart_caps_hit[prop] else ""
        print(f"{prop} validation AUROC per fold: {shown} (mean {mean:.3f}){note}")
    print(summary.funnel_line())
    print(f"done in {summary.seconds:.1f} s -> {summary.outputs['scores']}, {summary.outputs['filtered']}/, "
          f"{summary.outputs['grid']}, {summary.outputs['funnel']}")
    return 0


if __name__ == "__main__":
    run_main(main)
