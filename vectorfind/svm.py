"""Stage 8, directions: 16 groups, top/bottom k per (property, group), seeded split, LinearSVC, unit normals
(or, with method 'ridge', the ridge-regression gradient of the score on w over every member: fit_ridge).

Orientation: the SVM is fitted with class 1 = the group's top k ('largest'), so its normal points towards larger
scores and adding it increases the property. The original's string classes made 'smallest' the positive side;
`orientation='original'` negates our vectors to reproduce that.

Conditional directions (InterFaceGAN-style): each target direction projected onto the orthogonal complement of
the span of the group's other two target directions and of the four grouping attributes' directions (fitted the
same way on the whole sample), then renormalised, so an edit moves the chosen property while leaving the others'
linear predictors unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.errors import PipelineError, log_line
from vectorfind.directions import GROUP_NAMES, GROUP_PROPERTIES, TARGET_PROPERTIES, score_column

DUAL_MAX_SAMPLES = 2000
# The grouping attributes' directions (conditional directions only) come from a seeded subset of this many samples:
# at 240,000 samples the full-sample fits would cost more than all 48 group fits together.
ATTRIBUTE_MAX_SAMPLES = 40000
# Ridge directions (method 'ridge'): penalty per sample on centred w. On 8,000 landmark-labelled samples of the
# embedded FineTune-v8, the held-out top/bottom accuracy is highest at 1e-4 to 1e-3 (eyes 0.85, mouth 0.95, pose
# 1.00) and falls from 1e-2 (eyes 0.84) to 1e-1 (0.80); a tenfold change moves the direction by cos 0.85-0.90.
RIDGE_ALPHA = 1e-3
ACCURACY_COLUMNS = ("property", "group", "group_size", "k", "n_train", "n_valid", "train_accuracy",
                    "valid_accuracy")


def compute_medians(scores: np.ndarray) -> dict[str, float]:
    return {p: float(np.median(scores[:, score_column(p)])) for p in GROUP_PROPERTIES}


def group_members(scores: np.ndarray, medians: dict[str, float]) -> dict[str, np.ndarray]:
    """Sample indices of each of the 16 groups ('h' = score >= median), in GROUP_NAMES order."""
    high = scores[:, [score_column(p) for p in GROUP_PROPERTIES]] >= np.array([medians[p] for p in GROUP_PROPERTIES])
    # GROUP_NAMES enumerates 'h' before 'l' with the first property most significant: code = sum of low bits.
    code = (~high).astype(np.int64) @ (1 << np.arange(len(GROUP_PROPERTIES) - 1, -1, -1))
    return {name: np.flatnonzero(code == g) for g, name in enumerate(GROUP_NAMES)}


def top_bottom(values: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the k largest and k smallest values, k = max(int(ratio x n), 1); ties by position."""
    n = len(values)
    if n < 2:
        raise PipelineError(f"a group has {n} sample(s); the SVM needs at least 2 - sample more (--num-samples)")
    k = max(int(ratio * n), 1)
    order = np.argsort(values, kind="stable")
    return order[n - k:], order[:k]


def split_class(indices: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shuffled = rng.permutation(indices)
    n_train = min(max(int(fraction * len(shuffled)), 1), len(shuffled))
    return shuffled[:n_train], shuffled[n_train:]


@dataclass
class SvmFit:
    vector: np.ndarray   # unit normal, towards the top class
    train_accuracy: float
    valid_accuracy: float
    n_train: int
    n_valid: int


def enable_sklearnex() -> bool:
    """patch_sklearn() as the original; False when scikit-learn-intelex is not installed."""
    try:
        from sklearnex import patch_sklearn
    except ImportError:
        return False
    import logging

    logging.getLogger("sklearnex").setLevel(logging.WARNING)
    patch_sklearn(verbose=False)
    return True


def fit_linear_svm(w: np.ndarray, top: np.ndarray, bottom: np.ndarray, fraction: float, split_seed,
                   random_state: int) -> SvmFit:
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(split_seed)
    top_train, top_valid = split_class(top, fraction, rng)
    bottom_train, bottom_valid = split_class(bottom, fraction, rng)
    train = np.concatenate([top_train, bottom_train])
    valid = np.concatenate([top_valid, bottom_valid])
    y_train = np.r_[np.ones(len(top_train)), np.zeros(len(bottom_train))].astype(np.int64)
    y_valid = np.r_[np.ones(len(top_valid)), np.zeros(len(bottom_valid))].astype(np.int64)
    # The same objective (C 1, squared hinge, L2) either way; liblinear's dual solver is fast for small n (the
    # original's default), its primal Newton solver for n well above the 512 dims.
    svm = LinearSVC(random_state=random_state, dual=bool(len(train) <= DUAL_MAX_SAMPLES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear's max_iter warning; the original ran with the same defaults
        svm.fit(w[train], y_train)
    normal = svm.coef_[0].astype(np.float64)
    norm = np.linalg.norm(normal)
    if not np.isfinite(norm) or norm == 0:
        raise PipelineError("an SVM normal came out zero; the scores do not separate (check the property CNN)")
    valid_accuracy = float((svm.predict(w[valid]) == y_valid).mean()) if len(valid) else float("nan")
    return SvmFit((normal / norm).astype(np.float32), float((svm.predict(w[train]) == y_train).mean()),
                  valid_accuracy, len(train), len(valid))


def fit_ridge(w: np.ndarray, values: np.ndarray, members: np.ndarray, top: np.ndarray, bottom: np.ndarray,
              fraction: float, split_seed, alpha: float = RIDGE_ALPHA) -> SvmFit:
    """The ridge-regression gradient of the standardised score on w, fitted on the training part of every member
    (not only the extremes), as a unit vector towards larger scores. Accuracies as for the SVM: the top and bottom
    k of the same seeded split, told apart by the projection on the vector (threshold: midway between the two
    training classes' mean projections), so the two methods' tables read the same way."""
    rng = np.random.default_rng(split_seed)
    top_train, top_valid = split_class(top, fraction, rng)
    bottom_train, bottom_valid = split_class(bottom, fraction, rng)
    held_out = np.concatenate([top_valid, bottom_valid])
    train = np.setdiff1d(members, held_out)
    x = w[train].astype(np.float64)
    mean = x.mean(axis=0)
    x -= mean
    y = values[train].astype(np.float64)
    y = (y - y.mean()) / max(float(y.std()), 1e-12)
    coef = np.linalg.solve(x.T @ x + alpha * len(x) * np.eye(x.shape[1]), x.T @ y)
    norm = np.linalg.norm(coef)
    if not np.isfinite(norm) or norm == 0:
        raise PipelineError("a ridge direction came out zero; the scores do not vary with w (check the labels)")
    vector = coef / norm

    def accuracy(top_part: np.ndarray, bottom_part: np.ndarray, threshold: float) -> float:
        if not len(top_part) + len(bottom_part):
            return float("nan")
        right = (w[top_part] @ vector > threshold).sum() + (w[bottom_part] @ vector <= threshold).sum()
        return float(right / (len(top_part) + len(bottom_part)))

    threshold = float((w[top_train] @ vector).mean() + (w[bottom_train] @ vector).mean()) / 2
    return SvmFit(vector.astype(np.float32), accuracy(top_train, bottom_train, threshold),
                  accuracy(top_valid, bottom_valid, threshold), len(train), len(held_out))


def _fit_job(w, scores, members, prop, ratio, fraction, seed, random_state, method="svm"):
    top, bottom = top_bottom(scores[members, score_column(prop)], ratio)
    if method == "ridge":
        fit = fit_ridge(w, scores[:, score_column(prop)], members, members[top], members[bottom], fraction, seed)
    else:
        fit = fit_linear_svm(w, members[top], members[bottom], fraction, seed, random_state)
    return fit, len(members), len(top)


@dataclass
class DirectionSet:
    plain: dict[tuple[str, str], np.ndarray]          # (property, group) -> unit vector towards more
    conditional: dict[tuple[str, str], np.ndarray]
    attributes: dict[str, np.ndarray]                 # grouping attribute directions (whole sample)
    accuracy: pd.DataFrame


def fit_directions(w: np.ndarray, scores: np.ndarray, medians: dict[str, float], ratio: float = 0.2,
                   fraction: float = 0.8, split_seed: int = 2025, random_state: int = 2025, jobs: int = 1,
                   pooled: bool = False, method: str = "svm", log=log_line) -> DirectionSet:
    """One LinearSVC per (target property, group) plus one per grouping attribute on the whole sample.

    pooled: one LinearSVC per target property on the whole sample, used for every group (for labels that
    exist for a few thousand samples only, where 16 groups would leave each SVM a few dozen per class).
    method: 'svm' (the original's) or 'ridge' (fit_ridge) for the target properties; the grouping attributes'
    directions are SVMs either way."""
    everyone = np.arange(len(w))
    if len(everyone) > ATTRIBUTE_MAX_SAMPLES:
        everyone = np.sort(np.random.default_rng([split_seed, 99]).choice(len(w), ATTRIBUTE_MAX_SAMPLES,
                                                                            replace=False))
    if pooled:
        groups = {}
        tasks = [(p, "all") for p in TARGET_PROPERTIES]
    else:
        groups = group_members(scores, medians)
        empty = [g for g, m in groups.items() if len(m) < 2]
        if empty:
            raise PipelineError(f"group(s) {', '.join(empty)} have fewer than 2 samples; sample more (--num-samples)")
        tasks = [(p, g) for p in TARGET_PROPERTIES for g in GROUP_NAMES]
    tasks += [(a, "all") for a in GROUP_PROPERTIES]
    members_of = groups | {"all": everyone}
    all_props = TARGET_PROPERTIES + GROUP_PROPERTIES

    def seed_of(prop, group):
        return [split_seed, all_props.index(prop), (GROUP_NAMES + ("all",)).index(group)]

    args = [(w, scores, members_of[g], p, ratio, fraction, seed_of(p, g), random_state,
             method if p in TARGET_PROPERTIES else "svm") for p, g in tasks]
    if jobs > 1:
        from joblib import Parallel, delayed

        # threads: liblinear releases the GIL, and w is shared instead of copied to worker processes
        results = Parallel(n_jobs=jobs, prefer="threads")(delayed(_fit_job)(*a) for a in args)
    else:
        results = [_fit_job(*a) for a in args]
    plain, attributes, rows = {}, {}, []
    for (prop, group), (fit, size, k) in zip(tasks, results):
        if prop in TARGET_PROPERTIES:
            for g in (GROUP_NAMES if pooled else (group,)):
                plain[(prop, g)] = fit.vector
        else:
            attributes[prop] = fit.vector
        rows.append({"property": prop, "group": group, "group_size": size, "k": k, "n_train": fit.n_train,
                     "n_valid": fit.n_valid, "train_accuracy": fit.train_accuracy,
                     "valid_accuracy": fit.valid_accuracy})
    accuracy = pd.DataFrame(rows, columns=ACCURACY_COLUMNS)
    pooled_rows = []
    for prop in TARGET_PROPERTIES:
        part = accuracy[(accuracy.property == prop) & ((accuracy.group == "all") if pooled else
                                                       (accuracy.group != "all"))]
        pooled_rows.append({"property": prop, "group": "pooled", "group_size": int(part.group_size.sum()),
                            "k": int(part.k.sum()), "n_train": int(part.n_train.sum()),
                            "n_valid": int(part.n_valid.sum()),
                            "train_accuracy": float((part.train_accuracy * part.n_train).sum() / part.n_train.sum()),
                            "valid_accuracy": float((part.valid_accuracy * part.n_valid).sum()
                                                    / max(part.n_valid.sum(), 1))})
    accuracy = pd.concat([accuracy, pd.DataFrame(pooled_rows)], ignore_index=True)
    return DirectionSet(plain, conditional_directions(plain, attributes, log), attributes, accuracy)


def conditional_directions(plain: dict[tuple[str, str], np.ndarray], attributes: dict[str, np.ndarray],
                           log=log_line) -> dict[tuple[str, str], np.ndarray]:
    """Each plain direction projected off its group's other two and the grouping attributes' directions. Where that
    leaves nothing (the direction lies in their span: in a group of a few samples two properties can pick the same
    top and bottom faces, so their SVMs coincide) the plain direction stands in, and one line says which."""
    conditional, fallback = {}, []
    for p, g in plain:
        try:
            conditional[(p, g)] = project_off(plain[(p, g)], [plain[(q, g)] for q in TARGET_PROPERTIES if q != p]
                                              + [attributes[a] for a in GROUP_PROPERTIES])
        except PipelineError:
            conditional[(p, g)] = plain[(p, g)]
            fallback.append(f"{p}/{g}")
    if fallback:
        log(f"conditional directions: {len(fallback)} of {len(plain)} lie in the span of their group's other "
            f"directions (too few samples per group to tell them apart; sample more): the plain direction stands "
            f"in for {', '.join(fallback)}")
    return conditional


def project_off(vector: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """Unit vector of `vector` minus its projection on span(others)."""
    basis, _ = np.linalg.qr(np.stack(others, axis=1).astype(np.float64))
    v = vector.astype(np.float64)
    rest = v - basis @ (basis.T @ v)
    norm = np.linalg.norm(rest)
    if norm < 1e-6:
        raise PipelineError("a direction lies in the span of the others; conditional directions are undefined")
    return (rest / norm).astype(np.float32)


def oriented(vector: np.ndarray, orientation: str) -> np.ndarray:
    """Our vectors point towards more; 'original' flips them to the original's towards-smaller sign."""
    return -vector if orientation == "original" else vector
