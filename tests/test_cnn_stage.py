"""Stage 2 end to end on a few teacher faces: annotator, label checks, training reuse, filter, CLI errors."""

import re
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from cnn.annotate import AnnotatorThresholds, FaceAnnotator, labels_from_signals, strip_sharpness
from cnn.config import CnnConfig
from cnn.labels import read_labels
from cnn.stage import run_filter_stage
from common.config import resolve_config
from common.errors import PipelineError
from common.fileio import load_image, save_image
from common.images import to_uint8
from stylegan.teacher_dcgan import sample_teacher_images


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return to_uint8(sample_teacher_images(24, seed=7))


@pytest.fixture(scope="module")
def annotator() -> FaceAnnotator:
    return FaceAnnotator()


def _write_images(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        save_image(image, folder / f"{i:06d}.png")


def _config(tmp_path, **overrides) -> CnnConfig:
    values = dict(images_dir=str(tmp_path / "images"), labels_csv=str(tmp_path / "cnn" / "labels.csv"),
                  models_dir=str(tmp_path / "cnn" / "models"), log_dir=str(tmp_path / "cnn" / "log"),
                  inference_dir=str(tmp_path / "cnn" / "inference_result"),
                  all_scores_csv=str(tmp_path / "cnn" / "all_image_quality_and_gender.csv"),
                  report_grid=str(tmp_path / "cnn" / "kept_vs_rejected.png"),
                  filtered_dir=str(tmp_path / "filtered"), num_folds=2, width_multiplier=0.125,
                  max_epochs=1, patience=1, max_restarts=0, learning_rate=1e-3, annotate=False)
    values.update(overrides)
    return resolve_config(CnnConfig, "cnn", profile="embedded", **values)


# ---------------------------------------------------------------------------------------------- annotator


def test_annotator_on_generated_faces(faces, annotator):
    out = annotator.annotate(list(faces[:8]))
    assert len(out) == 8
    for column in ("quality", "gender", "age", "glass"):
        assert set(out[column].unique()) <= {0, 1}
    assert (out["face_probability"] >= 0.8).sum() >= 5  # these are faces; MTCNN finds most
    assert out["female_probability"].between(0, 1).all()
    assert out["age_estimate"].between(0, 90).all()
    found = out["face_probability"] > 0
    assert out.loc[found, "eye_distance_ratio"].between(0.1, 0.8).all()
    # the labels are the thresholded signals
    expected = labels_from_signals(out, annotator.thresholds)
    pd.testing.assert_frame_equal(out[["quality", "gender", "age", "glass"]], expected)


def test_blurring_the_top_strip_lowers_its_sharpness(faces):
    drops = []
    for image in faces[:10]:
        blurred = image.copy()
        blurred[:16, 16:48] = cv2.GaussianBlur(image, (0, 0), 1.5)[:16, 16:48]
        drops.append(strip_sharpness(blurred) / strip_sharpness(image))
    assert np.median(drops) < 0.7
    assert strip_sharpness(faces[0]) == pytest.approx(strip_sharpness(faces[0].copy()))


def test_quality_label_rules():
    signals = pd.DataFrame({
        "face_probability": [0.99, 0.0, 0.99, 0.99, 0.5],
        "eye_distance_ratio": [0.4, np.nan, np.nan, 0.4, 0.4],
        "strip_sharpness": [1.0, 1.0, 1.0, 0.3, 1.0],
        "female_probability": [0.9, 0.1, 0.5, 0.49, 0.0],
        "age_estimate": [20, 60, 48, 30, 30],
        "glasses_probability": [0.5, np.nan, 0.9, 0.2, 0.1]})
    labels = labels_from_signals(signals, AnnotatorThresholds(glasses_threshold=0.6))
    assert labels["quality"].tolist() == [1, 0, 0, 0, 0]
    assert labels["gender"].tolist() == [1, 0, 1, 0, 0]
    assert labels["age"].tolist() == [0, 1, 1, 0, 0]
    assert labels["glass"].tolist() == [0, 0, 1, 0, 0]


# ---------------------------------------------------------------------------------------------- stage


def _rules(min_gender, min_quality):
    # gender's restart threshold 0.0 can never be met, quality's 100 always is
    return {"gender": {"restart_loss": 0.0, "keep_min": min_gender},
            "quality": {"restart_loss": 100.0, "keep_min": min_quality, "stratified": True}}


def _balanced_labels(n):
    return pd.DataFrame({"img_name": np.arange(n), "quality": [1, 1, 0, 1] * (n // 4),
                         "gender": [1, 0] * (n // 2)})


def test_stage_end_to_end_then_reuse_and_retrain(tmp_path, faces):
    _write_images(tmp_path / "images", faces)
    config = _config(tmp_path, max_restarts=1, properties=_rules(0.0, 0.5))
    config.path("labels_csv").parent.mkdir(parents=True)
    _balanced_labels(16).to_csv(config.path("labels_csv"), index=False)
    messages = []
    summary = run_filter_stage(config, log=messages.append)

    models = sorted(p.name for p in config.path("models_dir").glob("*.pt"))
    assert models == [f"{p}_model_{k}.pt" for p in ("gender", "quality") for k in range(2)]
    # gender's threshold 0.0 cannot be met: each fold is retrained once, then the cap is reported
    assert sum("restart cap hit" in m for m in messages) == 2
    assert all("gender fold" in m for m in messages if "restart cap hit" in m)
    quality_log = pd.read_csv(config.path("log_dir") / "train_log_quality.csv", index_col=0)
    assert len(quality_log) == 2 and quality_log["success"].all()  # met at the first try: no restart
    gender_log = pd.read_csv(config.path("log_dir") / "train_log_gender.csv", index_col=0)
    assert len(gender_log) == 4 and gender_log["kept"].sum() == 2 and not gender_log["success"].any()
    assert {"fold_no", "success", "min_val_loss", "total_epochs", "best_epoch", "elapsed_time (s)",
            "val_loss_list"} <= set(gender_log.columns)
    detail = pd.read_csv(config.path("log_dir") / "epoch_detail_quality_1.csv", index_col=0)
    assert list(detail.columns[:11]) == ["epoch", "val_loss", "val_accuracy", "tp", "tn", "fp", "fn", "val_recall",
                                         "val_precision", "val_f1_score", "val_auroc"]

    inference = pd.read_csv(config.path("inference_dir") / "quality.csv")
    assert list(inference.columns) == ["img_no", "img_path", "property_quality_final_score",
                                       "score_model_0", "score_model_1"]
    assert inference["img_no"].tolist() == list(range(16, 24))
    mean = inference[["score_model_0", "score_model_1"]].mean(axis=1).round(4)
    np.testing.assert_allclose(inference["property_quality_final_score"], mean, atol=1e-4)

    scores = pd.read_csv(config.path("all_scores_csv"), index_col=0)
    assert list(scores.columns) == ["img_no", "img_path", "gender_score", "quality_score"]
    assert len(scores) == 24
    assert scores["quality_score"].iloc[:16].tolist() == [1, 1, 0, 1] * 4  # labelled rows keep their labels
    kept = scores[(scores["gender_score"] >= 0.0) & (scores["quality_score"] >= 0.5)]["img_no"]
    exported = sorted(int(p.stem) for p in config.path("filtered_dir").iterdir())
    assert exported == sorted(kept.tolist())
    assert summary.kept == len(kept) and summary.generated == 24 and summary.labelled == 16
    assert "generated 24 -> labelled 16" in summary.funnel_line()
    assert load_image(config.path("report_grid")).shape[2] == 3
    assert len(summary.fold_auroc["gender"]) == 2

    # a re-run reuses models and inference; stricter thresholds shrink the exported set
    stamps = {p: p.stat().st_mtime_ns for p in config.path("models_dir").glob("*.pt")}
    messages.clear()
    stricter = _config(tmp_path, max_restarts=1, properties=_rules(0.0, 0.99))
    again = run_filter_stage(stricter, log=messages.append)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert sum("reusing" in m for m in messages) == 4 + 2
    assert len(list(config.path("filtered_dir").iterdir())) == again.kept <= summary.kept
    # --retrain writes new models
    run_filter_stage(stricter, retrain=True, log=messages.append)
    assert any(p.stat().st_mtime_ns != stamps[p] for p in stamps)

    # changed labels without --retrain: refuse to mix models and labels
    _balanced_labels(16).assign(gender=[0, 1] * 8).to_csv(config.path("labels_csv"), index=False)
    with pytest.raises(PipelineError, match="--retrain"):
        run_filter_stage(stricter, log=messages.append)


def test_stage_annotates_missing_labels(tmp_path, faces):
    _write_images(tmp_path / "images", faces[:12])
    config = _config(tmp_path, annotate=True, num_labelled=10)
    from cnn.images import list_generated_images
    from cnn.labels import obtain_labels

    labels = obtain_labels(config, list_generated_images(config.path("images_dir")), force=False, log=lambda m: None)
    assert labels["img_name"].tolist() == list(range(10))
    assert (labels["label_source"] == "annotator").all()
    written = read_labels(config.path("labels_csv"))
    assert written[["img_name", "quality", "gender"]].equals(labels[["img_name", "quality", "gender"]])
    signals = pd.read_csv(config.path("labels_csv").with_name("annotator_signals.csv"))
    assert {"face_probability", "strip_sharpness", "glasses_probability", "age", "glass"} <= set(signals.columns)


@pytest.mark.parametrize("content, message", [
    ("img_name,gender\n0,1\n", "missing column(s) quality"),
    ("img_name,quality,gender\n0,2,1\n", "row 2 has quality = '2'"),
    ("img_name,quality,gender\n0,1,1\n0,1,0\n", "more than once"),
    ("img_name,quality,gender\nx,1,1\n", "img_name = 'x'"),
])
def test_malformed_label_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(PipelineError, match=re.escape(message)) as info:
        read_labels(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _run_cli(*args, cwd, out):
    # Every output folder points into the test's tmp dir, so a run that gets further never writes to the repo.
    outputs = ["--models-dir", out / "models", "--log-dir", out / "log", "--inference-dir", out / "inference",
               "--all-scores-csv", out / "all.csv", "--report-grid", out / "grid.png", "--filtered-dir", out / "kept"]
    return subprocess.run([sys.executable, "run_cnn.py", *args, *map(str, outputs)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_errors_are_one_line(tmp_path, repo_root, faces):
    missing = _run_cli("--images-dir", str(tmp_path / "nowhere"), "--labels-csv", str(tmp_path / "l.csv"),
                       cwd=repo_root, out=tmp_path / "out")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nowhere" in missing.stderr and "stage-1" in missing.stderr

    _write_images(tmp_path / "images", faces[:4])
    no_labels = _run_cli("--images-dir", str(tmp_path / "images"), "--labels-csv", str(tmp_path / "l.csv"),
                         "--no-annotate", cwd=repo_root, out=tmp_path / "out")
    assert no_labels.returncode == 2 and "l.csv" in no_labels.stderr and "--annotate" in no_labels.stderr

    (tmp_path / "bad.csv").write_text("img_name;quality;gender\n0;1;1\n")
    bad = _run_cli("--images-dir", str(tmp_path / "images"), "--labels-csv", str(tmp_path / "bad.csv"),
                   cwd=repo_root, out=tmp_path / "out")
    assert bad.returncode == 2 and "bad.csv" in bad.stderr and "missing column" in bad.stderr

    wrong_size = tmp_path / "big"
    _write_images(wrong_size, np.zeros((2, 32, 32, 3), np.uint8))
    (tmp_path / "ok.csv").write_text("img_name,quality,gender\n0,1,1\n")
    size = _run_cli("--images-dir", str(wrong_size), "--labels-csv", str(tmp_path / "ok.csv"),
                    cwd=repo_root, out=tmp_path / "out")
    assert size.returncode == 2 and "000000.png" in size.stderr and "64x64" in size.stderr
    assert not (tmp_path / "out" / "log").exists()  # bad input: nothing written


def test_export_kept_hardlinks_and_drops_stale_images(tmp_path):
    from cnn.keep import export_kept

    sources = []
    for i in range(3):
        path = tmp_path / "src" / f"{i:06d}.png"
        path.parent.mkdir(exist_ok=True)
        save_image(np.full((8, 8, 3), i, np.uint8), path)  # real images: every kept image is decoded first
        sources.append(path)
    out = tmp_path / "filtered"
    out.mkdir()
    (out / "000009.png").write_bytes(b"old")  # kept by an earlier, looser run
    (out / "notes.txt").write_text("not an image of ours")
    assert export_kept(sources[:2], out, "hardlink") == 2
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "notes.txt"]
    assert (out / "000001.png").stat().st_ino == sources[1].stat().st_ino
    assert export_kept(sources[:2], out, "copy") == 0  # already there


# ---------------------------------------------------------------------------------------------- fold model files


def test_fold_model_round_trip_and_one_line_errors(tmp_path):
    from cnn.fold_models import load_fold_model, model_path
    from cnn.models import build_property_cnn
    from common.checkpoints import save_weights

    config = _config(tmp_path)
    path = model_path(config.path("models_dir"), "gender", 0)
    with pytest.raises(PipelineError, match="re-run run_cnn.py to train it") as info:
        load_fold_model(config, "gender", 0)
    assert str(path) in str(info.value) and "\n" not in str(info.value)

    trained = build_property_cnn("gender", config.resolution, config.width_multiplier)
    save_weights(path, trained.state_dict())
    loaded = load_fold_model(config, "gender", 0)
    assert not loaded.training
    for key, value in trained.state_dict().items():
        assert loaded.state_dict()[key].equal(value)

    # a quality model saved under the gender name: the layouts differ, named in one line
    save_weights(path, build_property_cnn("quality", config.resolution, config.width_multiplier).state_dict())
    with pytest.raises(PipelineError, match="--retrain") as info:
        load_fold_model(config, "gender", 0)
    assert "layout does not match" in str(info.value) and "\n" not in str(info.value)
