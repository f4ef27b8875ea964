"""Every file and folder the pipeline writes, and the model files users supply, named once.

The stages' config path fields default to these names, the named runs of a profile (`--stage v8_dataset`,
`--version v8`, `--model hairstyle`) take theirs from STAGE_PATHS, and the pipeline, the report, the app and `make clean-outputs`
(OUTPUTS) read them from here; no other module or profile spells an output path (tests/test_artifacts.py checks).
Paths are relative to the output root (the repository by default, see common/paths.py) and keep the original
project's names.

Stages 1-4 run twice with the same code: on the base generator's faces (FACES) and, as stage 7, on FineTune-v1's
(V8_FACES, the v8 dataset that FineTune-v8 learns from).
"""

from __future__ import annotations

from dataclasses import dataclass


# Model files stages read but never write: shipped with the repository (the embedded base generator, which
# `python -m stylegan.train_embedded_base --export` rebuilds) or downloaded by the user (celeba256).
EMBEDDED_GENERATOR = "stylegan/models/embedded_stylegan_64.pth"
CELEBA_GENERATOR = "stylegan/stylegan_model.pth"
FACEXFORMER_CHECKPOINT = "segmentation/models/segmentation_model.pt"
SUPPLIED_MODELS = frozenset({EMBEDDED_GENERATOR, CELEBA_GENERATOR, FACEXFORMER_CHECKPOINT})


def grid_png(folder: str) -> str:
    """The preview grid a stage writes beside an image folder: `<folder>_grid.png`."""
    return f"{folder}_grid.png"


# Stage 4's score tables by algorithm (in the face set's property_scores folder), and the raw landmark measures.
SCORE_FILES = {"v1": "all_scores.csv", "v2": "all_scores_v2.csv", "hairstyle": "all_scores_ohlora_v3.csv"}
GEOMETRY_FILE = "face_geometry.csv"


@dataclass(frozen=True)
class FaceSet:
    """Where stages 1-4 put one set of generated faces."""

    images: str            # stage 1: {i:06d}.png, latents.npz, GENERATION_CONFIG_FILE
    labels_csv: str        # stage 2: the labelled first images (the annotator's, or labelled by hand)
    cnn_models: str        # stage 2: {property}_model_{fold}.pt, model_info.json
    cnn_log: str           # stage 2: train logs, the resolved config (CNN_CONFIG_FILE)
    cnn_inference: str     # stage 2: per-property scores of the unlabelled images
    cnn_scores_csv: str    # stage 2: every image's label or ensemble score
    cnn_report_grid: str   # stage 2: kept vs rejected faces
    cnn_funnel: str        # stage 2: how many images each rule kept
    filtered: str          # stage 2: the kept images
    segmentation: str      # stage 3: face crops and class maps
    property_scores: str   # stage 4: the score tables (SCORE_FILES)

    def scores_csv(self, algorithm: str) -> str:
        return f"{self.property_scores}/{SCORE_FILES[algorithm]}"

    def annotator_signals(self) -> str:
        """The annotator's raw signals, written beside the labels CSV it writes."""
        return f"{self.labels_csv.rsplit('/', 1)[0]}/{ANNOTATOR_SIGNALS}"

    def outputs(self) -> tuple[str, ...]:
        """What stages 1-4 write for this set (the labels CSV is kept: see KEPT)."""
        return (self.images, grid_png(self.images), self.cnn_models, self.cnn_log, self.cnn_inference,
                self.cnn_scores_csv, self.cnn_report_grid, self.cnn_funnel, self.filtered, grid_png(self.filtered),
                self.segmentation, grid_png(self.segmentation), self.property_scores)


def fold_model(models_dir: str, prop: str, fold: int) -> str:
    """Stage 2's model file of one property and fold (in a face set's cnn_models)."""
    return f"{models_dir}/{prop}_model_{fold}.pt"


ANNOTATOR_SIGNALS = "annotator_signals.csv"  # beside the labels CSV the annotator writes
GENERATION_CONFIG_FILE = "generation_config.json"
CNN_CONFIG_FILE = "cnn_config.json"

FACES = FaceSet(
    images="stylegan/synthesize_results",
    labels_csv="cnn/synthesize_results_quality_and_gender.csv",
    cnn_models="cnn/models",
    cnn_log="cnn/log",
    cnn_inference="cnn/inference_result",
    cnn_scores_csv="cnn/all_image_quality_and_gender.csv",
    cnn_report_grid="cnn/kept_vs_rejected.png",
    cnn_funnel="cnn/funnel.png",
    filtered="stylegan/synthesize_results_filtered",
    segmentation="segmentation/segmentation_results",
    property_scores="segmentation/property_score_results",
)

V8_DATASET_DIR = "stylegan/generate_dataset"
V8_FACES = FaceSet(
    images="stylegan/generated_face_images",
    labels_csv=f"{V8_DATASET_DIR}/scores_labeled_first_2k.csv",
    cnn_models=f"{V8_DATASET_DIR}/cnn_models",
    cnn_log=f"{V8_DATASET_DIR}/log",
    cnn_inference=f"{V8_DATASET_DIR}/inference_result",
    cnn_scores_csv=f"{V8_DATASET_DIR}/scores_all_15k.csv",
    cnn_report_grid=f"{V8_DATASET_DIR}/kept_vs_rejected.png",
    cnn_funnel=f"{V8_DATASET_DIR}/funnel.png",
    filtered="stylegan/generated_face_images_filtered",
    segmentation="segmentation/segmentation_results_v8",
    property_scores="segmentation/property_score_results_v8",
)

# Stage 5: the property-score CNNs (seven properties from all_scores_v2.csv, hairstyle, and the two merged).
PROPERTY_CNN_MODELS = "property_score_cnn/models"
PROPERTY_CNN_LOGS = "property_score_cnn/train_logs"
SEVEN_CNN_FILE = "stylegan_gen_fine_tuned_v2_cnn.pth"
HAIRSTYLE_CNN_FILE = "ohlora_v3_hairstyle_property_cnn.pth"
MERGED_CNN_FILE = "ohlora_v3_merged_property_cnn.pth"
MERGED_CNN = f"{PROPERTY_CNN_MODELS}/{MERGED_CNN_FILE}"
SEVEN_CNN_LOG = "train_log_v2_cnn.csv"
HAIRSTYLE_CNN_LOG = "property_score_cnn_train_log.csv"
SEVEN_CNN_PREDICTIONS = f"{FACES.property_scores}/all_scores_v2_cnn.csv"
SEVEN_CNN_COMPARE = f"{FACES.property_scores}/compare/all_scores_v2_vs_cnn.csv"


@dataclass(frozen=True)
class FineTuneRun:
    """Stage 6, one version: the training run's folder and the exported generator / discriminator."""

    run_dir: str           # training state, train_log.csv, previews, SUMMARY_FILE, TRAIN_CURVES_FILE
    generator: str
    discriminator: str


FINE_TUNE = {
    "v1": FineTuneRun("runs/fine_tuning_v1", "stylegan_modified/stylegan_gen_fine_tuned_v1.pth",
                      "stylegan_modified/stylegan_dis_fine_tuned_v1.pth"),
    "v8": FineTuneRun("runs/fine_tuning_v8", "stylegan/models/stylegan_gen_fine_tuned_v8.pth",
                      "stylegan/models/stylegan_dis_fine_tuned_v8.pth"),
}
RUN_SUMMARY_FILE = "summary.json"
TRAIN_CURVES_FILE = "train_curves.png"
# The generators VectorFind and the app edit, in order of preference (the newest fine-tune that exists).
EDITED_GENERATORS = (FINE_TUNE["v8"].generator, FINE_TUNE["v1"].generator)
# Teacher / base / v1 / v8 side by side (bench/bench_generator_variety.py, run by the pipeline after stage 6).
GENERATOR_VARIETY = "runs/generator_variety"
GENERATOR_VARIETY_CSV = f"{GENERATOR_VARIETY}/generator_variety.csv"
GENERATOR_VARIETY_PNG = f"{GENERATOR_VARIETY}/generator_variety.png"

# Stages 8-9: VectorFind.
VECTORFIND = "vectorfind/v8"
VECTORFIND_MEDIANS = "vectorfind/v8_property_scores"
VECTORS_DIR = "property_score_vectors"     # the chosen direction set, inside VECTORFIND
DIRECTION_KINDS = ("plain", "conditional")  # both sets: property_score_vectors_{kind}


def vectors_dir(kind: str | None = None, vectorfind_dir: str = VECTORFIND) -> str:
    """The chosen direction set (kind None) or one kind's set."""
    return f"{vectorfind_dir}/{VECTORS_DIR if kind is None else f'{VECTORS_DIR}_{kind}'}"


# Files inside VECTORFIND that other stages, the app and the report read.
DIRECTIONS_INFO_FILE = "directions_info.json"      # how the chosen directions were found
SVM_ACCURACY_FILE = "svm_accuracy.csv"
VARIANT_COMPARISON_FILE = "variant_comparison.csv"  # the compare phase
SUMMARY_PNG_FILE = "summary.png"
STRIPS_DIR = "strips"                               # strip_{property}.png
Z_VECTORS_FILE = "ohlora_z_vectors.csv"             # cases picked in the app's Select tab ...
GROUP_NAMES_FILE = "ohlora_w_group_names.csv"       # ... and their groups
EVALUATION_DIR = "image_generation_report"          # the evaluation of random cases
SELECTED_EVALUATION_DIR = "final_vector_test_report"  # the evaluation of the cases in Z_VECTORS_FILE
TEST_RESULT_FILE = "test_result.csv"                # in an evaluation folder: one row per case
LATENT_CODES_FILE = "latent_codes_all.csv"          # row i = case i's latent
TEST_STATISTICS_FILE = "test_statistics.csv"
LANDMARK_GRADING_FILE = "landmark_grading.csv"
EVALUATION_SUMMARY_FILE = "evaluation_summary.json"
EVALUATION_SUMMARY = f"{VECTORFIND}/{EVALUATION_DIR}/{EVALUATION_SUMMARY_FILE}"

# Stage 10 (the app) and the pipeline runner.
FACE_APP_SAVED = "face_app/saved"
REPORTS = "reports"
LOCK_FILE = ".ohlora.lock"

# The named runs of a profile take their paths from here: [<stage>.<section>] values of the profile go over these,
# which go over the section's own defaults. v8_dataset is stage 7 (stages 1-4 on FineTune-v1's faces); v8 is
# FineTune-v8 (run_stylegan_fine_tuning.py --version v8); hairstyle is stage 5's hairstyle CNN
# (run_property_score_cnn.py --model hairstyle): the v8 dataset's hairstyle scores, else the stage-1 set's.
STAGE_PATHS: dict[str, dict[str, dict[str, str]]] = {
    "v8_dataset": {
        "generator": {"checkpoint": FINE_TUNE["v1"].generator, "output_dir": V8_FACES.images},
        "cnn": {"images_dir": V8_FACES.images, "labels_csv": V8_FACES.labels_csv, "models_dir": V8_FACES.cnn_models,
                "log_dir": V8_FACES.cnn_log, "inference_dir": V8_FACES.cnn_inference,
                "all_scores_csv": V8_FACES.cnn_scores_csv, "report_grid": V8_FACES.cnn_report_grid,
                "funnel_png": V8_FACES.cnn_funnel, "filtered_dir": V8_FACES.filtered},
        "segmentation": {"input_dir": V8_FACES.filtered, "output_dir": V8_FACES.segmentation},
        "property_scores": {"segmentation_dir": V8_FACES.segmentation, "output_dir": V8_FACES.property_scores,
                            "images_dir": V8_FACES.filtered},
        "app": {"images_dir": V8_FACES.images, "labels_csv": V8_FACES.labels_csv},
    },
    "v8": {
        "fine_tuning": {"init_checkpoint": FINE_TUNE["v1"].generator,
                        "init_discriminator": FINE_TUNE["v1"].discriminator,
                        "images_dir": V8_FACES.filtered, "labels_csv": "",  # labels = "zeros" in the profiles
                        "classifier_models_dir": V8_FACES.cnn_models, "run_dir": FINE_TUNE["v8"].run_dir,
                        "export_generator": FINE_TUNE["v8"].generator,
                        "export_discriminator": FINE_TUNE["v8"].discriminator},
    },
    "hairstyle": {
        "property_cnn": {"scores_csv": V8_FACES.scores_csv("hairstyle"), "images_dir": V8_FACES.filtered,
                         "fallback_scores_csv": FACES.scores_csv("hairstyle"), "fallback_images_dir": FACES.filtered},
    },
}


def stage_paths(stage: str | None, section: str) -> dict[str, str]:
    """The path fields a named run sets in a section (empty for the default run and for sections it leaves alone)."""
    return dict(STAGE_PATHS.get(stage or "", {}).get(section, {}))


# What `make clean-outputs` removes (python -m common.outputs), by stage: folders whole, globs allowed.
OUTPUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1-4 base generator's faces", FACES.outputs() + (FACES.annotator_signals(),)),
    ("5 property-score CNNs", (PROPERTY_CNN_MODELS, PROPERTY_CNN_LOGS)),
    ("6 fine-tuning", tuple(p for run in FINE_TUNE.values() for p in (run.run_dir, run.generator, run.discriminator))
     + (GENERATOR_VARIETY,)),
    ("7 v8 dataset", V8_FACES.outputs() + (V8_DATASET_DIR,)),
    ("8-9 VectorFind", (VECTORFIND, VECTORFIND_MEDIANS)),
    ("pipeline runs", (REPORTS,)),
)
# Kept on purpose: the stage-2 labels (celeba256 users label by hand; the embedded annotator rewrites them when
# missing), the app's saved edits and the output root's lock.
KEPT = (FACES.labels_csv, FACE_APP_SAVED, LOCK_FILE)
