"""`--stage NAME`: [NAME.section] merged over [section], recorded in the dumped config."""

import argparse
import json

import pytest

from cnn.config import CnnConfig
from common import config as config_module
from common.config import add_config_arguments, dump_config, resolve_config
from common.errors import PipelineError
from segmentation.property_score_stage import PropertyScoresConfig


def test_v8_stage_overrides_only_its_keys(tmp_path):
    plain = resolve_config(CnnConfig, "cnn")
    v8 = resolve_config(CnnConfig, "cnn", stage="v8_dataset")
    assert v8.images_dir == "stylegan/generated_face_images" != plain.images_dir
    assert v8.labels_csv.endswith("scores_labeled_first_2k.csv")
    assert v8.seed == plain.seed and v8.num_folds == plain.num_folds  # not overridden -> [cnn]
    dumped = json.loads(dump_config(v8, tmp_path / "v8.json").read_text())
    assert dumped["stage"] == "v8_dataset"
    assert "stage" not in json.loads(dump_config(plain, tmp_path / "plain.json").read_text())
    scores = resolve_config(PropertyScoresConfig, "property_scores", stage="v8_dataset")
    assert scores.algorithm == "hairstyle" and scores.segmentation_dir.endswith("_v8")


def test_stage_flag_and_flags_win_over_stage(monkeypatch):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, CnnConfig)
    args = parser.parse_args(["--stage", "v8_dataset", "--images-dir", "elsewhere"])
    cfg = resolve_config(CnnConfig, "cnn", args)
    assert cfg.images_dir == "elsewhere" and cfg.filtered_dir == "stylegan/generated_face_images_filtered"


def test_unknown_stage_and_bad_key_are_one_line_errors(tmp_path, monkeypatch):
    (tmp_path / "p.toml").write_text('[cnn]\nseed = 1\n[v8.cnn]\nno_such_key = 2\n')
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    with pytest.raises(PipelineError, match="no stage 'v9'.*v8"):
        resolve_config(CnnConfig, "cnn", profile="p", stage="v9")
    with pytest.raises(PipelineError, match="unknown key.*no_such_key"):
        resolve_config(CnnConfig, "cnn", profile="p", stage="v8")
