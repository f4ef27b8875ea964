"""What stage 5 writes besides the models: the validation scatter and the 7-output CNN's predictions with their
comparison to stage 4's scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.fileio import atomic_path, atomic_write_csv
from common.paths import repo_relative
from property_score_cnn.config import PropertyCnnConfig
from property_score_cnn.dataset import Dataset
from property_score_cnn.models import SEVEN_NAMES
from property_score_cnn.training import pearson_r


def save_scatter(predicted: np.ndarray, target: np.ndarray, names: tuple[str, ...], path: Path, title: str) -> None:
    """Predicted vs target per property on the validation split, r in each panel's title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.axis("off")
            continue
        x, y = target[:, k], predicted[:, k]
        ax.scatter(x, y, s=6, alpha=0.5, linewidths=0)
        low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set_title(f"{names[k]}: r = {pearson_r(y, x):.3f}", fontsize=9)
        ax.set_xlabel("target (z-score)", fontsize=8)
        ax.set_ylabel("CNN", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_predictions(config: PropertyCnnConfig, dataset: Dataset, predicted: np.ndarray, val_idx: np.ndarray
                      ) -> dict[str, str]:
    """all_scores_v2_cnn.csv (img_no, img_path, 7 scores) and compare/all_scores_v2_vs_cnn.csv."""
    img_paths = [repo_relative(p) for p in dataset.paths]
    predictions = pd.DataFrame({"img_no": dataset.scores["img_no"].to_numpy(), "img_path": img_paths})
    compare = predictions.copy()
    split = np.full(len(predictions), "train", dtype=object)
    split[val_idx] = "valid"
    for k, name in enumerate(SEVEN_NAMES):
        column = f"{name}_score"
        predictions[column] = np.round(predicted[:, k], 4)
        compare[f"{column}_v2"] = dataset.scores[column].to_numpy()
        compare[f"{column}_v2_cnn"] = predictions[column]
        compare[f"{column}_diff"] = np.round(np.abs(compare[f"{column}_v2"] - compare[f"{column}_v2_cnn"]), 4)
    compare["split"] = split
    atomic_write_csv(predictions, config.path("predictions_csv"), index=False)
    atomic_write_csv(compare, config.path("compare_csv"), index=False)
    return {"predictions": repo_relative(config.path("predictions_csv")),
            "compare": repo_relative(config.path("compare_csv"))}
