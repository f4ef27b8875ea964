"""Scoring the unlabelled images with each property's fold ensemble (inference_result/{p}.csv, redone only when
the models or the images changed), and the merged table of every image's label or score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cnn.config import CnnConfig
from cnn.fold_models import load_fold_model, model_path
from cnn.images import to_tensor
from cnn.labels import LABEL_ID
from cnn.training import predict_scores
from common.devices import choose_device
from common.errors import log_line
from common.fileio import atomic_write_csv, load_images
from common.freshness import newer_than
from common.paths import repo_relative


def ensemble_average(per_model_scores: np.ndarray) -> np.ndarray:
    """[models, images] -> arithmetic mean over models, rounded to 4 decimals as the original."""
    return np.round(np.asarray(per_model_scores, np.float64).mean(axis=0), 4)


def _inference_is_current(csv_path: Path, img_nos: np.ndarray, model_paths: list[Path]) -> bool:
    """Written after the models, for the same images."""
    if not newer_than(csv_path, model_paths):
        return False
    try:
        existing = pd.read_csv(csv_path, usecols=["img_no"])["img_no"].to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return False
    return np.array_equal(existing, img_nos)


def run_inference(config: CnnConfig, unlabelled: pd.DataFrame, force: bool, chunk: int = 512,
                  log=log_line, properties: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Score the unlabelled images with each property's K models (eval mode, batched); every image
    is read once for all properties whose CSV is not current. `properties`: default all of the config's."""
    out = {}
    inference_dir = config.path("inference_dir")
    img_nos = unlabelled["img_no"].to_numpy()
    todo = []
    for prop in properties if properties is not None else config.property_names:
        csv_path = inference_dir / f"{prop}.csv"
        paths = [model_path(config.path("models_dir"), prop, k) for k in range(config.num_folds)]
        if not force and _inference_is_current(csv_path, img_nos, paths):
            out[prop] = pd.read_csv(csv_path)
            log(f"{prop}: reusing {csv_path} ({len(img_nos)} images)")
        else:
            todo.append(prop)
    if not todo:
        return out
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    device = choose_device(config.device)
    models = {prop: [load_fold_model(config, prop, k).to(device, memory_format=memory_format)
                     for k in range(config.num_folds)] for prop in todo}
    scores = {prop: np.zeros((config.num_folds, len(unlabelled)), np.float64) for prop in todo}
    bar = tqdm(total=len(unlabelled), desc=f"inference ({', '.join(todo)})", unit="img")
    for start in range(0, len(unlabelled), chunk):
        part = unlabelled.iloc[start:start + chunk]
        batch = to_tensor(load_images(list(part["path"]), config.resolution))
        for prop in todo:
            for k, model in enumerate(models[prop]):
                scores[prop][k, start:start + len(part)] = predict_scores(model, batch, config.eval_batch_size,
                                                                          config.channels_last)
        bar.update(len(part))
    bar.close()
    for prop in todo:
        frame = pd.DataFrame({"img_no": img_nos, "img_path": [repo_relative(p) for p in unlabelled["path"]],
                              f"property_{prop}_final_score": ensemble_average(scores[prop])})
        for k in range(config.num_folds):
            frame[f"score_model_{k}"] = np.round(scores[prop][k], 4)
        atomic_write_csv(frame, inference_dir / f"{prop}.csv", index=False)
        out[prop] = frame
    return out


def merge_scores(images: pd.DataFrame, labels: pd.DataFrame, inference: dict[str, pd.DataFrame],
                 properties: list[str]) -> pd.DataFrame:
    """One row per generated image: labels for labelled images, ensemble scores for the rest."""
    frame = pd.DataFrame({"img_no": images["img_no"].to_numpy(),
                          "img_path": [repo_relative(p) for p in images["path"]]})
    for prop in properties:
        scores = dict(zip(labels[LABEL_ID], labels[prop].astype(float)))
        predicted = inference.get(prop)
        if predicted is not None:
            scores.update(zip(predicted["img_no"], predicted[f"property_{prop}_final_score"]))
        frame[f"{prop}_score"] = frame["img_no"].map(scores).astype(float)
    return frame
