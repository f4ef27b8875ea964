"""Generalised stage 2: any binary properties (age, glass for the v8 dataset), keep rule, resume, labels, ensembles."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from cnn.ensembles import load_ensembles
from cnn.config import CnnConfig
from cnn.images import list_generated_images
from cnn.keep import keep_mask
from cnn.labels import config_labels, obtain_labels
from cnn.stage import run_filter_stage
from cnn.models import build_property_cnn, crop_window
from cnn.properties import parse_property_rules
from common.config import resolve_config
from common.errors import PipelineError
from common.fileio import save_image
from common.images import to_uint8
from stylegan.teacher_dcgan import sample_teacher_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V8_RULES = {"gender": {"stratified": True, "keep_min": 0.2}, "quality": {"stratified": True, "keep_min": 0.2},
            "age": {"stratified": True, "keep_max": 0.9}, "glass": {"stratified": True, "keep_max": 0.9}}


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return to_uint8(sample_teacher_images(20, seed=11))


def _write_images(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        save_image(image, folder / f"{i:06d}.png")


def _config(root, **overrides) -> CnnConfig:
    values = dict(images_dir=str(root / "images"), labels_csv=str(root / "labels.csv"),
                  models_dir=str(root / "models"), log_dir=str(root / "log"), inference_dir=str(root / "inference"),
                  all_scores_csv=str(root / "scores.csv"), report_grid=str(root / "grid.png"),
                  funnel_png=str(root / "funnel.png"), filtered_dir=str(root / "kept"), num_folds=2,
                  width_multiplier=0.125, max_epochs=2, patience=1, max_restarts=0, learning_rate=1e-3,
                  annotate=False, channels_last=False)
    values.update(overrides)
    return resolve_config(CnnConfig, "cnn", profile="embedded", **values)


def _v8_labels(n=16) -> pd.DataFrame:
    return pd.DataFrame({"idx": np.arange(n), "gender": [1, 0] * (n // 2), "quality": [1, 1, 0, 1] * (n // 4),
                         "age": [0, 0, 0, 1] * (n // 4), "glass": [0, 1, 0, 0] * (n // 4)})


# ---------------------------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("prop, resolution, window, feature_hw", [
    ("age", 256, (0, 128, 0, 256), (4, 12)), ("age", 64, (0, 32, 0, 64), (4, 12)),
    ("glass", 256, (80, 128, 64, 192), (2, 12)), ("glass", 64, (20, 32, 16, 48), (2, 12)),
])
def test_age_and_glass_crops_follow_section_7(prop, resolution, window, feature_hw):
    assert crop_window(prop, resolution) == window
    model = build_property_cnn(prop, resolution, width_multiplier=0.125).eval()
    assert model.feature_shape[1:] == feature_hw
    if resolution == 256:  # the original's FC1 inputs: 12288 (age) and 6144 (glass)
        assert build_property_cnn(prop, 256).fc1[0].in_features == (12288 if prop == "age" else 6144)
    # the model only sees its crop: pixels outside it do not change the score
    torch.manual_seed(0)
    images = torch.rand(2, 3, resolution, resolution)
    changed = images.clone()
    r0, r1, c0, c1 = window
    inside = torch.zeros(resolution, resolution, dtype=torch.bool)
    inside[r0:r1, c0:c1] = True
    changed[:, :, ~inside] = torch.rand(int((~inside).sum()))
    with torch.inference_mode():
        assert torch.equal(model(images), model(changed))
        # ...and pixels inside it do (new values everywhere in the crop: a single pixel can lose every max pool)
        changed[:, :, r0:r1, c0:c1] = torch.rand(2, 3, r1 - r0, c1 - c0)
        assert not torch.equal(model(images), model(changed))


def test_property_table_errors_are_one_line():
    for table, message in [({"gender": {"keep_minimum": 0.7}}, "unknown key(s) keep_minimum"),
                           ({"smile": {}}, "give its stack and crop_256"),
                           ({"smile": {"stack": "quality", "crop_256": [0, 300, 0, 10]}}, "crop_256"),
                           ({"gender": {"keep_min": "high"}}, "keep_min must be a number"),
                           ({}, "one entry per property")]:
        with pytest.raises(PipelineError, match=re.escape(message)) as info:
            parse_property_rules(table)
        assert "\n" not in str(info.value)
    smile = parse_property_rules({"smile": {"stack": "quality", "crop_256": [160, 224, 64, 192]}})[0]
    assert build_property_cnn("smile", 64, 0.125, smile.architecture).window == (40, 56, 16, 48)


# ---------------------------------------------------------------------------------------------- keep rule


def test_keep_rule_bounds_are_inclusive_and_labelled_images_excluded():
    rules = parse_property_rules({"gender": {"keep_min": 0.92}, "quality": {"keep_min": 0.9},
                                  "age": {"keep_max": 0.008}, "glass": {"keep_max": 0.01}})
    scores = pd.DataFrame({"gender_score": [0.92, 0.9199, 0.99, 0.99, 0.99, 0.95],
                           "quality_score": [0.9, 0.95, 0.95, 0.95, 0.95, 0.8999],
                           "age_score": [0.008, 0.0, 0.0081, 0.0, 0.0, 0.0],
                           "glass_score": [0.01, 0.0, 0.0, 0.0101, 0.0, 0.0]})
    assert keep_mask(scores, rules).tolist() == [True, False, False, False, True, False]
    labelled = np.array([True, False, False, False, False, False])
    assert keep_mask(scores, rules, labelled).tolist() == [False, False, False, False, True, False]


# ---------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("content, message", [
    ("idx,gender,quality,age\n0,1,1,0\n", "missing column(s) glass"),
    ("idx,gender,quality,age,glass\n0,1,1,0,2\n", "row 2 has glass = '2'; expected 0 or 1"),
    ("idx,gender,quality,age,glass\n0,1,1,0.5,0\n", "row 2 has age = '0.5'"),
    ("idx,gender,quality,age,glass\n0,1,1,,0\n", "row 2 has age = 'nan'"),
])
def test_v8_label_file_errors_name_the_file(tmp_path, content, message):
    config = _config(tmp_path, properties=V8_RULES, label_id_column="idx")
    config.path("labels_csv").write_text(content)
    with pytest.raises(PipelineError, match=re.escape(message)) as info:
        config_labels(config)
    assert str(config.path("labels_csv")) in str(info.value) and "\n" not in str(info.value)


def test_hand_labels_are_never_overwritten(tmp_path, faces):
    _write_images(tmp_path / "images", faces[:16])
    config = _config(tmp_path, properties=V8_RULES, label_id_column="idx", annotate=True)
    _v8_labels().to_csv(config.path("labels_csv"), index=False)  # no label_source column: by hand
    before = config.path("labels_csv").read_bytes()
    labels = obtain_labels(config, list_generated_images(config.path("images_dir")), force=True, log=lambda m: None)
    assert config.path("labels_csv").read_bytes() == before
    assert labels[["gender", "quality", "age", "glass"]].equals(_v8_labels()[["gender", "quality", "age", "glass"]])


# ---------------------------------------------------------------------------------------------- the stage


def test_extra_properties_leave_gender_and_quality_results_unchanged(tmp_path, faces):
    """The generalised stage trains gender and quality exactly as stage 2 does, whatever else it trains."""
    two = tmp_path / "two"
    _write_images(two / "images", faces)
    two_config = _config(two, properties={"gender": {"keep_min": 0.0}, "quality": {"keep_min": 0.0,
                                                                                   "stratified": True}})
    _v8_labels().rename(columns={"idx": "img_name"}).to_csv(two_config.path("labels_csv"), index=False)
    run_filter_stage(two_config, log=lambda m: None)

    four = tmp_path / "four"
    _write_images(four / "images", faces)
    four_config = _config(four, properties={"gender": {"keep_min": 0.0}, "quality": {"keep_min": 0.0,
                                            "stratified": True}, "age": {"stratified": True},
                                            "glass": {"stratified": True}})
    _v8_labels().rename(columns={"idx": "img_name"}).to_csv(four_config.path("labels_csv"), index=False)
    summary = run_filter_stage(four_config, log=lambda m: None)
    for prop in ("gender", "quality"):
        for k in range(2):
            a = torch.load(two_config.path("models_dir") / f"{prop}_model_{k}.pt", weights_only=True)
            b = torch.load(four_config.path("models_dir") / f"{prop}_model_{k}.pt", weights_only=True)
            assert all(torch.equal(a[key], b[key]) for key in a)
    scores = pd.read_csv(four_config.path("all_scores_csv"), index_col=0)
    assert list(scores.columns) == ["img_no", "img_path", "gender_score", "quality_score", "age_score", "glass_score"]
    assert set(summary.fold_auroc) == {"gender", "quality", "age", "glass"}

    # the ensembles API gives the inference CSV's numbers (before rounding) for generator-style batches
    ensembles = load_ensembles(config=four_config, device="cpu")
    unlabelled = np.stack([faces[i] for i in range(16, 20)])
    api = ensembles.scores(unlabelled)
    assert set(api) == {"gender", "quality", "age", "glass"}
    for prop, values in api.items():
        csv = pd.read_csv(four_config.path("inference_dir") / f"{prop}.csv")
        np.testing.assert_allclose(values, csv[f"property_{prop}_final_score"], atol=6e-5)
    nchw = torch.from_numpy(unlabelled).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(ensembles.scores(nchw)["age"], api["age"])
    with pytest.raises(PipelineError, match="64x64"):
        ensembles.scores(np.zeros((1, 32, 32, 3), np.uint8))


def test_v8_run_excludes_labelled_images_and_resumes_after_a_kill(tmp_path, faces):
    _write_images(tmp_path / "images", faces)
    config = _config(tmp_path, properties=V8_RULES, label_id_column="idx", keep_labelled=False)
    _v8_labels().to_csv(config.path("labels_csv"), index=False)

    class Killed(Exception):
        pass

    finished_before_kill = []

    def kill_after_first_age_fold(message):
        if ": min val loss" in message:  # logged once the fold is saved
            finished_before_kill.append(message.split(":")[0])
        if message.startswith("age fold 0: min val loss"):
            raise Killed

    with pytest.raises(Killed):
        run_filter_stage(config, log=kill_after_first_age_fold)
    messages = []
    summary = run_filter_stage(config, log=messages.append)
    reused = sorted(m.split(":")[0] for m in messages if "reusing" in m)
    # every fold saved before the kill (folds of all properties share the workers, so which ones varies) is reused
    assert "age fold 0" in reused and reused == sorted(finished_before_kill)

    # the resumed run gives the same models as one that was never interrupted
    fresh = tmp_path / "fresh"
    _write_images(fresh / "images", faces)
    fresh_config = _config(fresh, properties=V8_RULES, label_id_column="idx", keep_labelled=False)
    _v8_labels().to_csv(fresh_config.path("labels_csv"), index=False)
    run_filter_stage(fresh_config, log=lambda m: None)
    for prop in ("age", "glass"):
        for k in range(2):
            a = torch.load(config.path("models_dir") / f"{prop}_model_{k}.pt", weights_only=True)
            b = torch.load(fresh_config.path("models_dir") / f"{prop}_model_{k}.pt", weights_only=True)
            assert all(torch.equal(a[key], b[key]) for key in a)

    kept = sorted(int(p.stem) for p in config.path("filtered_dir").iterdir())
    assert kept and min(kept) >= 16  # hand-labelled images 0-15 are never in the v8 dataset
    assert summary.kept == len(kept) and summary.excluded_labelled == 16
    assert "labelled excluded" in summary.funnel_line() and "rejected by gender" in summary.funnel_line()
    assert config.path("funnel_png").read_bytes()[:4] == b"\x89PNG"
    assert config.path("report_grid").is_file()


def test_annotator_writes_the_v8_labels_file(tmp_path, faces):
    _write_images(tmp_path / "images", faces[:8])
    config = _config(tmp_path, properties=V8_RULES, label_id_column="idx", annotate=True, num_labelled=6)
    labels = obtain_labels(config, list_generated_images(config.path("images_dir")), force=False, log=lambda m: None)
    written = pd.read_csv(config.path("labels_csv"))
    assert list(written.columns) == ["idx", "gender", "quality", "age", "glass", "label_source"]
    assert written["idx"].tolist() == list(range(6)) and (written["label_source"] == "annotator").all()
    for column in ("gender", "quality", "age", "glass"):
        assert set(written[column]) <= {0, 1}
    signals = pd.read_csv(config.path("labels_csv").with_name("annotator_signals.csv"))
    assert written["age"].tolist() == signals["age"].tolist() and written["glass"].tolist() == signals["glass"].tolist()
    assert labels["img_name"].tolist() == list(range(6))  # the stage's own id name inside


def test_a_property_with_too_few_labels_of_one_class_stops_or_is_skipped(tmp_path, faces):
    """One glasses image among 16 labels cannot be split into folds: a one-line error by default; with
    skip_scarce_properties the stage trains the others, keeps the label column and leaves glass out of the rule."""
    _write_images(tmp_path / "images", faces)
    labels = _v8_labels().assign(glass=[1] + [0] * 15)
    config = _config(tmp_path, properties=V8_RULES, label_id_column="idx", keep_labelled=False)
    labels.to_csv(config.path("labels_csv"), index=False)
    with pytest.raises(PipelineError, match=r"glass labels have only 1 image\(s\) of class 1") as info:
        run_filter_stage(config, log=lambda m: None)
    assert "\n" not in str(info.value)

    skipping = _config(tmp_path, properties=V8_RULES, label_id_column="idx", keep_labelled=False,
                       skip_scarce_properties=True)
    messages = []
    summary = run_filter_stage(skipping, log=messages.append)
    assert any(m.startswith("glass: not trained") for m in messages)
    assert set(summary.fold_auroc) == {"gender", "quality", "age"} and set(summary.rejected_by) == {"gender", "quality", "age"}
    assert not list(skipping.path("models_dir").glob("glass_model_*.pt"))
    assert "glass not filtered (1 of 16 labelled images are 1" in summary.funnel_line()
    scores = pd.read_csv(skipping.path("all_scores_csv"), index_col=0)
    assert scores["glass_score"].iloc[:16].tolist() == labels["glass"].tolist()
    assert scores["glass_score"].iloc[16:].isna().all()
    # the keep rule is gender, quality and age alone
    rules = [r for r in parse_property_rules(V8_RULES) if r.name != "glass"]
    expected = keep_mask(scores, rules, scores["img_no"].lt(16).to_numpy())
    kept = sorted(int(p.stem) for p in skipping.path("filtered_dir").iterdir())
    assert kept == scores["img_no"][expected].tolist()


def test_fold_workers_train_the_same_models_as_one_fold_at_a_time(tmp_path, faces):
    """Folds trained in two worker processes equal the sequential ones bit for bit (same seeds, one thread each)."""
    runs = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        _write_images(root / "images", faces)
        config = _config(root, properties={"gender": {"keep_min": 0.0}, "age": {"stratified": True}},
                         label_id_column="idx", fold_workers=workers, num_threads=1)
        _v8_labels().to_csv(config.path("labels_csv"), index=False)
        runs[workers] = (config, run_filter_stage(config, log=lambda m: None))
    (one, one_summary), (two, two_summary) = runs[1], runs[2]
    for prop in ("gender", "age"):
        for k in range(2):
            a = torch.load(one.path("models_dir") / f"{prop}_model_{k}.pt", weights_only=True)
            b = torch.load(two.path("models_dir") / f"{prop}_model_{k}.pt", weights_only=True)
            assert all(torch.equal(a[key], b[key]) for key in a)
        log_one = pd.read_csv(one.path("log_dir") / f"train_log_{prop}.csv", index_col=0)
        log_two = pd.read_csv(two.path("log_dir") / f"train_log_{prop}.csv", index_col=0)
        assert log_one.drop(columns="elapsed_time (s)").equals(log_two.drop(columns="elapsed_time (s)"))
        assert (two.path("log_dir") / f"epoch_detail_{prop}_1.csv").is_file()
    assert one_summary.fold_auroc == two_summary.fold_auroc
    with pytest.raises(PipelineError, match="fold_workers must be >= 1"):
        _config(tmp_path, fold_workers=0)


def test_audit_annotates_a_seeded_sample_of_the_kept_images_once(tmp_path, faces):
    _write_images(tmp_path / "images", faces)
    rules = {"gender": {"keep_min": 0.0}, "quality": {"keep_min": 0.0, "stratified": True}}
    config = _config(tmp_path, properties=rules, label_id_column="idx", keep_labelled=False, audit_kept=3)
    _v8_labels().to_csv(config.path("labels_csv"), index=False)
    messages = []
    summary = run_filter_stage(config, log=messages.append)
    audit = pd.read_csv(config.path("log_dir") / "kept_audit.csv")
    kept = {int(p.stem) for p in config.path("filtered_dir").iterdir()}
    assert len(audit) == 3 and set(audit["img_no"]) <= kept and audit["img_no"].is_monotonic_increasing
    assert summary.kept_audit["sample"] == 3
    assert summary.kept_audit["female"] == pytest.approx(audit["gender"].mean(), abs=1e-4)
    assert summary.kept_audit["old"] == pytest.approx(audit["age"].mean(), abs=1e-4)
    assert "annotator on 3 kept: " in summary.funnel_line() and "glasses" in summary.funnel_line()
    assert any(m.startswith("annotating 3 of the 4 kept") for m in messages)

    again = []
    assert run_filter_stage(config, log=again.append).kept_audit == summary.kept_audit
    assert not any(m.startswith("annotating") for m in again)  # the same sample is read back, not re-annotated
