"""Stage 2's pictures: kept vs rejected faces with their scores, and the funnel of the keep rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cnn.summary import StageSummary
from common.fileio import atomic_path, load_images
from common.images import make_grid
from common.paths import resolve_repo_path


def save_report_grid(kept: pd.DataFrame, rejected: pd.DataFrame, path: Path, resolution: int,
                     properties: list[str], per_side: int = 16) -> None:
    """Kept examples on top, rejected below, each tile captioned with its scores (first letter of
    each property); small images are shown 2x."""
    import cv2

    from common.fileio import save_image

    scale = 2 if resolution < 128 else 1
    tile = resolution * scale
    caption_height = 12 * len(properties) + 4
    blocks = []
    for title, chosen, colour in (("kept", kept, (0, 140, 0)), ("rejected", rejected, (200, 0, 0))):
        shown = chosen.iloc[:per_side]
        pixels = load_images([resolve_repo_path(p) for p in shown["img_path"]], resolution) if len(shown) else \
            np.full((1, resolution, resolution, 3), 255, np.uint8)
        tiles = []
        for i, image in enumerate(pixels):
            big = image.repeat(scale, axis=0).repeat(scale, axis=1)
            caption = np.full((caption_height, tile, 3), 255, np.uint8)
            if len(shown):
                for line, prop in enumerate(properties):
                    cv2.putText(caption, f"{prop[:1]} {shown[f'{prop}_score'].iloc[i]:.3f}", (3, 11 + 12 * line),
                                cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.concatenate([big, caption]))
        grid = make_grid(np.stack(tiles), ncols=8)
        header = np.full((28, grid.shape[1], 3), 255, np.uint8)
        cv2.putText(header, f"{title}: {len(chosen)} (first {len(shown)} shown)", (6, 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 1, cv2.LINE_AA)
        blocks.append(np.concatenate([header, grid]))
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    save_image(np.concatenate(blocks), path)


def save_funnel_plot(summary: StageSummary, path: Path) -> None:
    """Bars: generated, labelled, candidates, rejections per property, kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["generated", "labelled"] + [f"fails {p}" for p in summary.rejected_by] + \
        (["labelled excluded"] if summary.excluded_labelled else []) + ["kept"]
    values = [summary.generated, summary.labelled, *summary.rejected_by.values()] + \
        ([summary.excluded_labelled] if summary.excluded_labelled else []) + [summary.kept]
    colours = ["#777777", "#4477aa"] + ["#cc6677"] * len(summary.rejected_by) + \
        (["#ddcc77"] if summary.excluded_labelled else []) + ["#117733"]
    figure, axes = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6))
    bars = axes.bar(names, values, color=colours)
    axes.bar_label(bars, labels=[str(v) for v in values], fontsize=8)
    axes.set_ylabel("images")
    axes.set_title(summary.funnel_line().replace("; ", "\n", 1), fontsize=8)
    axes.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
