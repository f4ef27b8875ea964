"""Stage 3: crop the face of every filtered image (MTCNN) and parse it into 11 classes.

    python run_segmentation.py [--profile embedded|celeba256] [--force] [--parser mesh|facexformer]

Reads stylegan/synthesize_results_filtered/{no:06d}.png|jpg (written by run_cnn.py) and writes
segmentation/segmentation_results/parsing_, face_ and parsing_visualization_{no:06d}.png,
skipped_images.csv (images without a usable face) and segmentation_config.json, plus a preview grid
segmentation/segmentation_results_grid.png. Finished images are skipped, so an interrupted run
resumes; --force redoes everything. The embedded profile parses with face-mesh landmarks (no
download); celeba256 uses FaceXFormer (checkpoint at segmentation/models/segmentation_model.pt).
"""

import argparse

from common.config import add_config_arguments, config_to_dict, resolve_config, resolve_repo_path
from common.errors import run_main
from segmentation.segmentation_stage import SegmentationConfig, plan_work, run_segmentation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="redo images that are already parsed or skipped")
    add_config_arguments(parser, SegmentationConfig, "segmentation")
    args = parser.parse_args()
    config = resolve_config(SegmentationConfig, "segmentation", args)
    if args.dry_run:
        print(config_to_dict(config))
        images, todo = plan_work(config, args.force)
        print(f"would parse {len(todo)} of {len(images)} images with the {config.parser} parser "
              f"into {resolve_repo_path(config.output_dir)}")
        return 0
    summary = run_segmentation(config, force=args.force)
    print(summary.line())
    if summary.grid_path is not None:
        print(f"preview grid: {summary.grid_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
