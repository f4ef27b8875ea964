"""Direction file format, grouping at the median boundary, and edit_w layer handling."""

import numpy as np
import pandas as pd
import pytest
import torch

from common.errors import PipelineError
from vectorfind.directions import (GROUP_NAMES, TARGET_PROPERTIES, direction_path, edit_w, group_name,
                                   load_directions, save_direction)


def test_file_round_trip_in_original_format(tmp_path):
    rng = np.random.default_rng(0)
    vectors = {p: rng.standard_normal(512).astype(np.float32) for p in TARGET_PROPERTIES}
    for prop, vector in vectors.items():
        save_direction(direction_path(tmp_path, prop, "hlhl"), vector)
    frame = pd.read_csv(tmp_path / "eyes_change_w_vector_hlhl.csv", index_col=0)
    assert list(frame.columns) == [str(i) for i in range(512)] and frame.shape == (1, 512)
    loaded = load_directions(tmp_path, "hlhl")
    for prop in TARGET_PROPERTIES:
        np.testing.assert_array_equal(loaded[prop], vectors[prop])


def test_missing_file_and_bad_group_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="run_vectorfind.py"):
        load_directions(tmp_path, "hhhh")
    with pytest.raises(PipelineError, match="unknown group"):
        load_directions(tmp_path, "hhh")


def test_group_name_median_is_high_and_order_is_fixed():
    medians = {"hair_color": 0.1, "hair_length": -0.2, "background_mean": 0.3, "hairstyle": 0.0}
    # score columns: eyes, hair_color, hair_length, mouth, pose, background_mean, background_std, hairstyle
    row = np.array([9, 0.1, -0.3, 9, 9, 0.31, 9, -1e-6])
    assert group_name(row, medians) == "hlhl"
    rows = np.stack([row, [0, 0.0999, 0, 0, 0, 0.3, 0, 0]])
    assert group_name(rows, medians) == ["hlhl", "lhhh"]
    assert len(set(GROUP_NAMES)) == 16


def test_edit_w_layer_range_and_weights():
    rng = np.random.default_rng(1)
    directions = {p: rng.standard_normal(512).astype(np.float32) for p in TARGET_PROPERTIES}
    w = rng.standard_normal((2, 512)).astype(np.float32)
    weights = {"eyes": np.array([1.0, -2.0]), "mouth": 0.5}
    wp = edit_w(w, directions, weights, num_layers=10, layers=(2, 4))
    offset0 = directions["eyes"] + 0.5 * directions["mouth"]
    offset1 = -2.0 * directions["eyes"] + 0.5 * directions["mouth"]
    np.testing.assert_allclose(wp[0, 3], w[0] + offset0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(wp[1, 2], w[1] + offset1, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(wp[:, [0, 1, 5, 9]], np.repeat(w[:, None], 4, axis=1))
    wp_all = edit_w(torch.from_numpy(w[0]), directions, {"pose": 1.0}, num_layers=10)
    assert isinstance(wp_all, torch.Tensor) and wp_all.shape == (1, 10, 512)
    torch.testing.assert_close(wp_all[0, 9], torch.from_numpy(w[0] + directions["pose"]))
    with pytest.raises(PipelineError, match="outside"):
        edit_w(w, directions, weights, num_layers=10, layers=(5, 10))
