"""Stage 5: property-score CNNs (the 7-output CNN, the hairstyle CNN, the merged 8-output CNN).

    python run_property_score_cnn.py --model seven|hairstyle|merged [--retrain] [--force] [--profile P]

seven      trains on segmentation/property_score_results/all_scores_v2.csv and the generator's images it
           lists; writes property_score_cnn/models/stylegan_gen_fine_tuned_v2_cnn.pth,
           property_score_cnn/train_logs/train_log_v2_cnn.csv, val_scatter_v2_cnn.png,
           segmentation/property_score_results/all_scores_v2_cnn.csv and compare/all_scores_v2_vs_cnn.csv
hairstyle  trains on the v8 dataset's all_scores_ohlora_v3.csv if present, else on stage 4's hairstyle
           scores of the stage-1 filtered set; writes ohlora_v3_hairstyle_property_cnn.pth,
           train_logs/property_score_cnn_train_log.csv and val_scatter_hairstyle_cnn.png
merged     combines the two files into ohlora_v3_merged_property_cnn.pth (outputs: the 7 + hairstyle)

Settings: [property_cnn] of configs/<profile>.toml; the hairstyle CNN is the named run `hairstyle`
([hairstyle.property_cnn] over [property_cnn]). A trained model is reused on re-runs (--retrain trains again;
--force also redoes every output).
"""

import argparse
import sys

from common.config import add_config_arguments, config_to_dict, resolve_config
from common.errors import PipelineError, run_main
from property_score_cnn.config import MODEL_CHOICES, MODEL_STAGES, PropertyCnnConfig
from property_score_cnn.stage import plan, run_property_cnn_stage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=MODEL_CHOICES,
                        help="which CNN to train or build (hairstyle: the run [hairstyle.property_cnn])")
    parser.add_argument("--retrain", action="store_true", help="train again instead of reusing the model file")
    parser.add_argument("--force", action="store_true", help="retrain and rewrite every output")
    # --help shows the values of the run --model picks
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model")
    stage = MODEL_STAGES.get(model.parse_known_args()[0].model)
    add_config_arguments(parser, PropertyCnnConfig, "property_cnn",
                         sys.argv[1:] + (["--stage", stage] if stage else []))
    args = parser.parse_args()
    if args.stage not in (None, MODEL_STAGES[args.model]):
        stage = MODEL_STAGES[args.model]
        raise PipelineError(f"--model {args.model} reads {f'[{stage}.property_cnn] over ' if stage else ''}"
                            f"[property_cnn], not --stage {args.stage}; leave out --stage")
    config = resolve_config(PropertyCnnConfig, "property_cnn", args, stage=MODEL_STAGES[args.model])
    hairstyle = (resolve_config(PropertyCnnConfig, "property_cnn", args, stage=MODEL_STAGES["hairstyle"])
                 if args.model == "merged" else None)
    if args.dry_run:
        print(config_to_dict(config))
        print("\n".join(plan(config, args.model, hairstyle)))
        return 0
    outcome = run_property_cnn_stage(config, args.model, retrain=args.retrain, force=args.force,
                                     hairstyle_config=hairstyle)
    if outcome.val_r:
        how = (f"trained, best epoch {outcome.best_epoch} of {outcome.total_epochs}" if outcome.trained
               else "reused")
        print(f"{outcome.kind} CNN ({how}) on {outcome.num_images} images; validation Pearson r:")
        for name, r in outcome.val_r.items():
            print(f"  {name:16s} {r:.3f}")
    print(f"done in {outcome.seconds:.1f} s -> " + ", ".join(outcome.outputs.values()))
    return 0


if __name__ == "__main__":
    run_main(main)
