"""Variety figures (stylegan/variety.py) and the w-spread term (stylegan/gan_trainer.py) on synthetic data with
known answers."""

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from stylegan.gan_trainer import plot_log_curves, w_spread_penalty
from stylegan.variety import (FIGURE_KEYS, as_nhwc_uint8, geometry_sds, pixel_diversity, sharpness,
                              variety_figures)


def checkerboards(num=6, size=32, seed=0):
    """Sharp random-colour checkerboards of varying cell size (lots of Laplacian energy)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(num):
        cell = 2 + k % 3
        yy, xx = np.mgrid[:size, :size]
        board = ((yy // cell + xx // cell) % 2).astype(np.float64)
        colour = rng.integers(60, 256, 3)
        out.append((board[..., None] * colour).astype(np.uint8))
    return np.stack(out)


def test_identical_images_have_zero_pixel_diversity_and_opposites_the_most():
    face = checkerboards(1)[0]
    assert pixel_diversity(np.stack([face] * 5), seed=1) == 0.0
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    assert pixel_diversity(np.stack([black, white]), seed=1) == pytest.approx(1.0)  # pairs are never one face twice
    half = np.stack([black, np.full((8, 8, 3), 51, np.uint8)])
    assert pixel_diversity(half, seed=2, pairs=100) == pytest.approx(0.2)
    assert np.isnan(pixel_diversity(black[None]))


def test_blurring_lowers_sharpness_and_a_flat_image_has_none():
    sharp = checkerboards()
    blurred = np.stack([cv2.GaussianBlur(img, (5, 5), 1.5) for img in sharp])
    assert sharpness(sharp) > 3 * sharpness(blurred) > 0
    assert sharpness(np.full((3, 16, 16, 3), 128, np.uint8)) == 0.0
    # the median over faces: one blurred face among sharp ones barely moves it
    mixed = np.concatenate([sharp, blurred[:1]])
    assert sharpness(mixed) > 0.8 * sharpness(sharp)


def test_nchw_torch_and_nhwc_numpy_give_the_same_figures():
    images = checkerboards()
    as_torch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    assert np.array_equal(as_nhwc_uint8(as_torch), images)
    assert variety_figures(as_torch, seed=3) == variety_figures(images, seed=3)
    with pytest.raises(ValueError, match="uint8"):
        as_nhwc_uint8(images.astype(np.float32))


def test_geometry_sds_skip_faces_without_landmarks_and_count_them():
    measured = np.array([[0.2, 0.0, -2.0, 0.1], [0.3, 0.1, 2.0, -0.1], [np.nan] * 4, [0.25, 0.05, 0.0, 0.0]])
    sds = geometry_sds(measured)
    assert sds["eye_opening_sd"] == pytest.approx(0.05)
    assert sds["roll_sd"] == pytest.approx(2.0)
    assert sds["yaw_sd"] == pytest.approx(0.1)
    assert sds["geometry_found"] == pytest.approx(0.75)
    assert np.isnan(geometry_sds(np.full((3, 4), np.nan))["mouth_opening_sd"])


class FixedGeometry:
    """Stands in for the landmark model: a fixed answer, and a record of what it was given."""

    def __init__(self, rows):
        self.rows = np.asarray(rows, np.float64)
        self.seen = None

    def measure(self, images):
        self.seen = images
        return self.rows[:len(images)]


def test_variety_figures_use_the_geometry_model_on_nhwc_images():
    images = checkerboards(4)
    geometry = FixedGeometry([[0.2, 0.1, 1.0, 0.0], [0.2, 0.3, 3.0, 0.0], [0.2, 0.2, 5.0, 0.0], [0.2, 0.2, 3.0, 0.0]])
    figures = variety_figures(torch.from_numpy(images).permute(0, 3, 1, 2), geometry, seed=0)
    assert list(figures) == list(FIGURE_KEYS)
    assert geometry.seen.shape == images.shape
    assert figures["eye_opening_sd"] == 0.0 and figures["yaw_sd"] == 0.0
    assert figures["roll_sd"] == pytest.approx(np.std([1, 3, 5, 3], ddof=1))
    assert figures["sharpness"] == sharpness(images)
    assert set(variety_figures(images)) == {"sharpness", "pixel_diversity"}  # no geometry: no SDs
    with pytest.raises(ValueError, match="rows"):
        variety_figures(images, np.zeros((2, 4)))


@pytest.mark.parametrize("kind", ["sd", "pairwise", "centred"])
def test_w_spread_is_zero_at_the_start_and_under_a_shift_and_grows_with_a_collapse(kind):
    torch.manual_seed(0)
    w_ref = torch.randn(64, 16) * torch.linspace(0.5, 2.0, 16)
    assert float(w_spread_penalty(w_ref.clone(), w_ref, kind)) == pytest.approx(0.0, abs=1e-6)
    assert float(w_spread_penalty(w_ref + 3.0, w_ref, kind)) == pytest.approx(0.0, abs=1e-5)  # the mean may move
    mean = w_ref.mean(dim=0)
    half = float(w_spread_penalty(mean + 0.5 * (w_ref - mean), w_ref, kind))
    tenth = float(w_spread_penalty(mean + 0.1 * (w_ref - mean), w_ref, kind))
    assert 0 < half < tenth
    # a gradient step on the term alone pulls a collapsed w back towards the reference's spread
    w = (mean + 0.5 * (w_ref - mean)).requires_grad_(True)
    w_spread_penalty(w, w_ref, kind).backward()
    stepped = (w - 0.05 * w.grad / w.grad.norm() * w.detach().norm()).detach()
    assert float(w_spread_penalty(stepped, w_ref, kind)) < half


def test_only_the_centred_term_sees_a_rotation_of_w():
    torch.manual_seed(1)
    w_ref = torch.randn(64, 8)
    permuted = w_ref[:, torch.randperm(8)]  # a rotation that keeps the per-dim SDs (all about 1) roughly
    assert float(w_spread_penalty(permuted, w_ref, "centred")) > 0.5
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    rotated = w_ref @ q
    assert float(w_spread_penalty(rotated, w_ref, "pairwise")) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="kind"):
        w_spread_penalty(w_ref, w_ref, "variance")
    with pytest.raises(ValueError, match="shape"):
        w_spread_penalty(w_ref[:10], w_ref, "sd")


def test_relative_panels_are_drawn_as_fractions_of_the_first_value(tmp_path, monkeypatch):
    log = pd.DataFrame({"step": [0, 10, 20], "variety_roll_sd": [4.0, np.nan, 2.0], "d_loss": [1.0, 0.5, 0.25]})
    log.to_csv(tmp_path / "log.csv", index=False)
    drawn = {}
    import matplotlib.axes

    original = matplotlib.axes.Axes.plot

    def spy(self, x, y, *args, label=None, **kwargs):
        drawn[label] = list(np.asarray(y))
        return original(self, x, y, *args, label=label, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    out = plot_log_curves(tmp_path / "log.csv", tmp_path / "curves.png",
                          {"variety": ["variety_roll_sd"], "losses": ["d_loss"]}, relative=("variety",))
    assert out.is_file()
    assert drawn["variety_roll_sd"] == [1.0, 0.5]
    assert drawn["d_loss"] == [1.0, 0.5, 0.25]
