"""Stage 4: property scores (v1, v2 or hairstyle) from the segmentation stage's class maps and face crops.

    python compute_property_scores.py --algorithm v2
    python compute_property_scores.py --algorithm hairstyle --segmentation-dir DIR --output OUT.csv
"""

from __future__ import annotations

import argparse
import json

from common.config import add_config_arguments, config_to_dict, resolve_config
from common.errors import run_main
from common.paths import repo_relative
from segmentation.property_score_stage import PropertyScoresConfig, find_segmentation_pairs, \
    run_property_scores


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Compute property scores from parsing_NNNNNN.png class maps and face_NNNNNN.png crops "
                    "and write them as a CSV (pandas index, img_no, img_path, score columns).",
        epilog="Scoring is cheap (a few ms per image), so every run recomputes all images; there is nothing "
               "to resume. The CSV is replaced atomically, and the resolved config is written beside it "
               "as <output>.config.json.")
    add_config_arguments(parser, PropertyScoresConfig, "property_scores")
    args = parser.parse_args()
    config = resolve_config(PropertyScoresConfig, "property_scores", args)

    if args.dry_run:
        print(json.dumps(config_to_dict(config), indent=2, sort_keys=True))
        pairs = find_segmentation_pairs(config.segmentation_dir)
        print(f"would score {len(pairs)} images with {config.algorithm} -> {repo_relative(config.output_path())}")
        return 0

    result = run_property_scores(config)
    kind = "raw scores" if config.raw else "z-scores"
    print(f"property scores {config.algorithm}: {result.num_images} images in {result.seconds:.1f} s "
          f"({1000 * result.seconds / result.num_images:.1f} ms/img), {kind} -> {repo_relative(result.output_path)}")
    return 0


if __name__ == "__main__":
    run_main(main)
