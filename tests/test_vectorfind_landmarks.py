"""VectorFind with landmark labels and the landmark grading, on the planted generator of
test_vectorfind_pipeline with a stand-in landmark model that reads the planted blocks (so the true
directions are known)."""

import numpy as np
import pandas as pd
import pytest
import torch

from common.errors import PipelineError
from test_vectorfind_pipeline import make_context
from vectorfind import landmarks
from vectorfind.directions import GROUP_NAMES, SCORE_NAMES, direction_path
from vectorfind.evaluation import edit_grid
from vectorfind.stage import run_phases
from vectorfind.svm import fit_directions

# planted block -> stand-in measure: eye opening block 0, mouth opening block 3, roll block 5, yaw block 4
BLOCK_OF_MEASURE = (0, 3, 5, 4)


class BlockGeometry:
    """Stand-in for segmentation.face_geometry.FaceGeometry: measure(NHWC uint8) -> [N, 4] block means."""

    def measure(self, images, progress=False):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        blocks = (images.transpose(0, 3, 1, 2).reshape(len(images), 8, 24).astype(np.float64) / 127.5 - 1.0).mean(2)
        return blocks[:, BLOCK_OF_MEASURE]


@pytest.fixture()
def landmark_run(tmp_path, monkeypatch):
    monkeypatch.setattr(landmarks, "FaceGeometry", BlockGeometry)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ctx = make_context(tmp_path, label_source="landmarks", landmark_samples=1600, landmark_cases=3,
                       pose_measure="yaw")
    results = run_phases(ctx, ("sample", "directions", "evaluate"))
    torch.set_num_threads(before)
    return ctx, results


def test_landmark_labels_find_the_planted_directions(landmark_run):
    ctx, results = landmark_run
    assert results["sample"]["landmark_measured"] == 1600
    assert (ctx.samples_dir / "geometry_000000_001600.npz").is_file()
    assert not (ctx.samples_dir / "geometry_001600_003200.npz").exists()   # only the first landmark_samples
    planted = ctx.generator.planted.numpy()
    for prop, row in (("eyes", 0), ("mouth", 3), ("pose", 4)):
        vectors = [pd.read_csv(direction_path(ctx.out / "property_score_vectors_plain", prop, g), index_col=0)
                   .to_numpy()[0] for g in GROUP_NAMES]
        assert all(np.array_equal(v, vectors[0]) for v in vectors)        # one pooled direction for every group
        assert float(vectors[0] @ planted[row]) > 0.5, prop
    accuracy = pd.read_csv(ctx.out / "svm_accuracy.csv")
    assert set(accuracy.group) == {"all", "pooled"}
    # resumes: nothing left to measure
    assert landmarks.measure_sample_geometry(ctx.generator, ctx.samples_dir, 3200, 1600, 1600, ctx.fingerprint,
                                             400, "cpu", progress=False, geometry=BlockGeometry()) == 0


def test_landmark_grading_of_the_evaluation(landmark_run):
    ctx, results = landmark_run
    grading = results["evaluate"]["landmark_grading"]
    assert grading["cases"] == 3 and grading["pose_measure"] == "yaw"
    assert grading["mean_abs_corr"]["eyes"] > 0.9 and grading["mean_abs_corr"]["mouth"] > 0.9
    assert grading["right_way"]["eyes"] == 1.0 and grading["right_way"]["mouth"] == 1.0
    table = pd.read_csv(ctx.out / "image_generation_report" / "landmark_grading.csv")
    assert len(table) == 3 and (table.faces_found == len(edit_grid())).all()


def test_grading_reads_the_saved_images_and_sees_a_wrong_way_edit(tmp_path):
    """Images whose eyes measure rises with the grid and whose pose measure falls: r +1 and -1."""
    grid = edit_grid()
    from common.fileio import save_image

    def path_of(case, k):
        return tmp_path / f"c{case}" / f"{k}.png"

    for case in range(4):
        for k, (e, m, p) in enumerate(grid):
            image = np.full((8, 8, 3), 128, np.uint8).transpose(2, 0, 1).reshape(8, 24)
            image[0] = 128 + 40 * e
            image[3] = 128 + 30 * m
            image[4] = 128 - 20 * p
            save_image(image.reshape(3, 8, 8).transpose(1, 2, 0).copy(), path_of(case, k))
    out = landmarks.grade_with_landmarks(tmp_path, grid, [0, 1, 2, 3], 2, seed=8, pose_measure="yaw",
                                         image_path_of=path_of, progress=False, geometry=BlockGeometry())
    assert out["cases"] == 2
    assert out["mean_corr"]["eyes"] > 0.99 and out["mean_corr"]["pose"] < -0.99
    assert out["right_way"] == {"eyes": 1.0, "mouth": 1.0, "pose": 0.0}


def test_landmark_scores_replace_targets_and_drop_faceless_rows():
    scores = np.arange(40, dtype=np.float64).reshape(5, 8)
    geometry = np.array([[0.3, 0.1, 2.0, 0.05]] * 4 + [[np.nan] * 4])
    with pytest.raises(PipelineError, match="plausible landmarks"):
        landmarks.landmark_scores(scores, geometry, "yaw")
    geometry = np.tile(geometry, (20, 1))
    out, keep = landmarks.landmark_scores(np.tile(scores, (20, 1)), geometry, "roll")
    assert len(keep) == 80 and np.isfinite(out).all()
    assert (out[:, SCORE_NAMES.index("eyes")] == 0.3).all() and (out[:, SCORE_NAMES.index("pose")] == 2.0).all()
    assert (out[:, SCORE_NAMES.index("hair_color")] == np.tile(scores, (20, 1))[keep, 1]).all()


def test_pooled_fit_uses_every_sample_for_the_targets():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2000, 512)).astype(np.float32)
    truth = rng.standard_normal((8, 512))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    scores = w @ truth.T + 0.1 * rng.standard_normal((2000, 8))
    medians = {"hair_color": 0.0, "hair_length": 0.0, "background_mean": 0.0, "hairstyle": 0.0}
    found = fit_directions(w, scores, medians, pooled=True)
    eyes = found.plain[("eyes", "hhhh")]
    assert all(np.array_equal(found.plain[("eyes", g)], eyes) for g in GROUP_NAMES)
    assert float(eyes @ truth[SCORE_NAMES.index("eyes")]) > 0.8
    pooled = found.accuracy[found.accuracy.group == "pooled"]
    assert len(pooled) == 3 and (pooled.n_train == 640).all()


def test_compare_measures_each_edit_by_its_landmark_measure(landmark_run):
    """The stand-in landmark model reads the same blocks as the stand-in CNN, so the self effect in SD of the
    landmark measure must equal the self effect in SD of the CNN score, and the drift per SD likewise."""
    ctx, _ = landmark_run
    from vectorfind.compare import run_compare

    torch.set_num_threads(1)
    result = run_compare(ctx)
    table = pd.read_csv(ctx.out / "variant_comparison.csv").set_index("variant")
    for prop in ("eyes", "mouth", "pose"):
        ratio = table[f"{prop}_landmark_self_sd"] / table[f"{prop}_self_effect_sd"]
        assert ratio.between(0.85, 1.15).all(), (prop, ratio.tolist())
        per_sd = table[f"{prop}_drift_per_landmark_sd"] / table[f"{prop}_drift_per_self"]
        assert per_sd.between(0.85, 1.15).all(), (prop, per_sd.tolist())
    assert all("drift/landmark SD" in line for line in result["lines"])
