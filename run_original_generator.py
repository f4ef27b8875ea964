"""Stage 1: generate faces with the profile's pretrained StyleGAN.

    python run_original_generator.py [--profile embedded|celeba256] [--num-images N] [--seed S]
    python run_original_generator.py --checkpoint stylegan_modified/stylegan_gen_fine_tuned_v1.pth \
        --checkpoint-entry generator_smooth --label-mode normal|zeros|fixed [--label-value '[0,0,2,0,0,0,0]']

Writes stylegan/synthesize_results/{i:06d}.png (or .jpg), latents.npz (z and w of every image
and the seed; the labels too for a label-conditioned checkpoint) and generation_config.json;
an interrupted run resumes where it stopped.
"""

import argparse

from common.config import add_config_arguments, config_to_dict, resolve_config
from common.errors import run_main
from stylegan.generate import GeneratorConfig, run_generation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="regenerate images that already exist")
    add_config_arguments(parser, GeneratorConfig, "generator")
    args = parser.parse_args()
    config = resolve_config(GeneratorConfig, "generator", args)
    if args.dry_run:
        print(config_to_dict(config))
        print(f"would generate {config.num_images} images into {config.output_dir}")
        return 0
    summary = run_generation(config, force=args.force)
    print(f"generated {summary['generated']} images ({summary['skipped']} already there) in "
          f"{summary['seconds']:.1f} s ({summary['images_per_second']:.1f} images/s on {summary['device']}) "
          f"-> {summary['output_dir']}")
    return 0


if __name__ == "__main__":
    run_main(main)
