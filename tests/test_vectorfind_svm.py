"""VectorFind directions on synthetic w: planted-direction recovery, orientation, grouping and k at boundaries,
conditional projection."""

import numpy as np
import pytest

from common.errors import PipelineError
from vectorfind.directions import GROUP_NAMES, GROUP_PROPERTIES, SCORE_NAMES, TARGET_PROPERTIES, group_name
from vectorfind.svm import compute_medians, fit_directions, group_members, oriented, project_off, top_bottom


def planted_sample(n=16000, dim=24, seed=0):
    """w ~ N(0, 1); score j = w . D_j + small noise, D orthonormal; D_j for all 8 score columns."""
    rng = np.random.default_rng(seed)
    planted, _ = np.linalg.qr(rng.standard_normal((dim, len(SCORE_NAMES))))
    w = rng.standard_normal((n, dim)).astype(np.float32)
    scores = (w @ planted + 0.05 * rng.standard_normal((n, len(SCORE_NAMES)))).astype(np.float32)
    return w, scores, planted.T


@pytest.fixture(scope="module")
def fitted():
    w, scores, planted = planted_sample()
    return fit_directions(w, scores, compute_medians(scores)), planted


def test_planted_directions_are_recovered_and_point_towards_more(fitted):
    found, planted = fitted
    for prop in TARGET_PROPERTIES:
        truth = planted[SCORE_NAMES.index(prop)]
        for group in GROUP_NAMES:
            cosine = float(found.plain[(prop, group)] @ truth)
            assert cosine >= 0.95, (prop, group, cosine)  # positive: adding the vector increases the score
            assert float(oriented(found.plain[(prop, group)], "original") @ truth) <= -0.95
    for attribute in GROUP_PROPERTIES:
        assert float(found.attributes[attribute] @ planted[SCORE_NAMES.index(attribute)]) >= 0.95
    rows = found.accuracy
    assert len(rows[rows.group.isin(GROUP_NAMES)]) == 48
    assert rows[rows.group == "pooled"].valid_accuracy.min() > 0.95


def test_conditional_directions_are_orthogonal_to_the_conditions(fitted):
    found, planted = fitted
    for (prop, group), vector in found.conditional.items():
        assert abs(np.linalg.norm(vector) - 1) < 1e-5
        for other in TARGET_PROPERTIES:
            if other != prop:
                assert abs(float(vector @ found.plain[(other, group)])) < 1e-5
        for attribute in GROUP_PROPERTIES:
            assert abs(float(vector @ found.attributes[attribute])) < 1e-5
        assert float(vector @ planted[SCORE_NAMES.index(prop)]) > 0.9


def test_group_members_match_group_name_and_median_counts_as_high():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((500, 8)).round(1)  # many ties, some exactly at the median
    medians = compute_medians(scores)
    members = group_members(scores, medians)
    names = group_name(scores, medians)
    for group, idx in members.items():
        assert all(names[i] == group for i in idx)
    assert sum(len(idx) for idx in members.values()) == 500
    at_median = np.flatnonzero(scores[:, SCORE_NAMES.index("hair_color")] == medians["hair_color"])
    assert len(at_median) and all(names[i][0] == "h" for i in at_median)


def test_k_selection_at_boundaries():
    values = np.array([5.0, 1.0, 3.0, 3.0, 9.0, 0.0, 7.0, 2.0, 8.0, 3.0])
    top, bottom = top_bottom(values, 0.2)  # k = int(2.0) = 2
    assert sorted(values[top]) == [8.0, 9.0] and sorted(values[bottom]) == [0.0, 1.0]
    top, bottom = top_bottom(values, 0.29)  # k = int(2.9) = 2, not rounded up
    assert len(top) == len(bottom) == 2
    top, bottom = top_bottom(values[:4], 0.2)  # k = max(int(0.8), 1) = 1
    assert values[top[0]] == 5.0 and values[bottom[0]] == 1.0
    top, bottom = top_bottom(np.array([3.0, 3.0, 3.0]), 0.5)  # ties: stable, disjoint
    assert set(top).isdisjoint(bottom)
    with pytest.raises(PipelineError, match="at least 2"):
        top_bottom(np.array([1.0]), 0.2)


def test_too_small_a_group_is_a_one_line_error():
    w, scores, _ = planted_sample(n=40)
    with pytest.raises(PipelineError, match="fewer than 2 samples"):
        fit_directions(w, scores, compute_medians(scores))


def test_projection_of_a_dependent_vector_is_refused():
    v = np.array([1.0, 0.0, 0.0], np.float32)
    with pytest.raises(PipelineError, match="span"):
        project_off(v, [np.array([2.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])])


def test_a_conditional_direction_in_the_span_of_the_others_falls_back_to_the_plain_one():
    from vectorfind.directions import GROUP_NAMES, GROUP_PROPERTIES, TARGET_PROPERTIES
    from vectorfind.svm import conditional_directions

    rng = np.random.default_rng(0)
    group = GROUP_NAMES[0]
    same = rng.standard_normal(16).astype(np.float32)  # two properties whose SVMs coincide (a tiny group)
    plain = {(p, group): same if k < 2 else rng.standard_normal(16).astype(np.float32)
             for k, p in enumerate(TARGET_PROPERTIES)}
    attributes = {a: rng.standard_normal(16).astype(np.float32) for a in GROUP_PROPERTIES}
    lines = []
    conditional = conditional_directions(plain, attributes, log=lines.append)
    first, second, third = TARGET_PROPERTIES
    assert conditional[(first, group)] is plain[(first, group)] and conditional[(second, group)] is plain[(second, group)]
    assert abs(float(conditional[(third, group)] @ plain[(first, group)])) < 1e-5  # projected as usual
    assert len(lines) == 1 and "plain direction stands in" in lines[0] and f"{first}/{group}" in lines[0]


def test_ridge_directions_recover_the_planted_ones_and_keep_svm_attributes():
    w, scores, planted = planted_sample(n=4000)
    medians = compute_medians(scores)
    ridge = fit_directions(w, scores, medians, pooled=True, method="ridge")
    svm = fit_directions(w, scores, medians, pooled=True, method="svm")
    for prop in TARGET_PROPERTIES:
        cosine = float(ridge.plain[(prop, GROUP_NAMES[0])] @ planted[SCORE_NAMES.index(prop)])
        assert cosine >= 0.99, (prop, cosine)  # towards more, and closer than the noise allows an SVM to be
    for attribute in GROUP_PROPERTIES:  # the grouping attributes stay SVM normals whatever the target method
        np.testing.assert_array_equal(ridge.attributes[attribute], svm.attributes[attribute])
    pooled = ridge.accuracy[ridge.accuracy.group == "pooled"]
    assert len(pooled) == 3 and pooled.valid_accuracy.min() > 0.95 and (pooled.n_valid > 0).all()


def test_ridge_direction_leans_on_what_moves_every_sample_more_than_the_svm_does():
    """A score that follows factor a everywhere, plus rare large jumps signed by b: the top and bottom 20 % are full
    of b-jumps, so their SVM leans on b; the regression over every sample leans on a."""
    from vectorfind.svm import fit_linear_svm, fit_ridge

    rng = np.random.default_rng(5)
    n, dim = 4000, 16
    w = rng.standard_normal((n, dim)).astype(np.float32)
    jumps = (rng.random(n) < 0.15) * np.sign(w[:, 1]) * 6.0
    score = w[:, 0] + jumps + 0.1 * rng.standard_normal(n)
    members = np.arange(n)
    top, bottom = top_bottom(score, 0.2)
    ridge = fit_ridge(w, score, members, top, bottom, 0.8, [0])
    svm = fit_linear_svm(w, top, bottom, 0.8, [0], 0)
    assert ridge.vector[0] > abs(ridge.vector[1]) and ridge.vector[0] > svm.vector[0]
