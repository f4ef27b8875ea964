"""Glasses detector of the embedded annotator: a small CNN ensemble learned from hand labels.

A hand-made frame cue (a thin bar across the nose bridge that reaches past both eyes) ranked
faces well (AUROC 0.85) but was only ~40% precise: eyebrows, hat brims and hair make the same
bars, and turned faces hide them. So the cue is learned instead, from faces labelled by eye:

* data: `sample_teacher_images(1000, seed=123)` (the embedded StyleGAN's teacher), each face
  labelled 1 (glasses, sunglasses or goggles), 0 (none) or -1 (unsure, not used) in
  `cnn/glasses_hand_labels.csv`;
* split: faces 0-799 train the model (5 stratified folds; out-of-fold scores choose the
  threshold), faces 800-999 are a held-out test set that no model or threshold sees;
* model: five folds' CNNs (3 -> 16 -> 32 -> 64 -> 96 channels, 3x3 conv + batch norm + ReLU +
  2x2 max pool each, global average pool, linear), their probabilities averaged; trained with
  flips, small shifts and brightness changes, class-balanced BCE.

The shipped ensemble is `cnn/glasses_model.pt` (float16, loads into float32 modules);
`python -m cnn.glasses` retrains it from the labels and prints the cross-validation and test
numbers.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold
from tqdm import tqdm

from cnn.training import binary_metrics
from common.training_loop import LoopSettings, train_model
from common.errors import PipelineError
from common.checkpoints import load_state_strict, read_weights, save_weights

INPUT_SIZE = 64
CHANNELS = (16, 32, 64, 96)
HAND_LABELS = Path(__file__).with_name("glasses_hand_labels.csv")
MODEL_PATH = Path(__file__).with_name("glasses_model.pt")
LABELLED_SEED, LABELLED_COUNT = 123, 1000
TRAIN_END = 800  # faces [0, 800) train and choose the threshold, [800, 1000) are the test set


class GlassesCNN(nn.Module):
    """[N, 3, 64, 64] floats in [0, 1] -> [N] logits (glasses vs none)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for channels in CHANNELS:
            layers += [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(in_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images).mean(dim=(2, 3))
        return self.head(self.dropout(x)).squeeze(1)


def prepare_images(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """NHWC or NCHW uint8 faces of any square size -> [N, 3, 64, 64] float in [0, 1]."""
    images = torch.as_tensor(np.asarray(images_uint8))
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images, got shape {tuple(images.shape)}")
    if images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    images = images.float().div_(255.0)
    if images.shape[-1] != INPUT_SIZE:
        images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="area"
                               if images.shape[-1] > INPUT_SIZE else "bilinear", align_corners=None)
    return images.contiguous()


@dataclass(frozen=True)
class GlassesTrainSettings:
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 4
    brightness: float = 0.2
    num_folds: int = 5
    seed: int = 0


def _augment(batch: torch.Tensor, settings: GlassesTrainSettings, rng: torch.Generator) -> torch.Tensor:
    """Random mirror, shift (reflect-padded) and brightness: faces are not centred exactly and
    glasses look the same mirrored."""
    n = len(batch)
    flip = torch.rand(n, generator=rng) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    s = settings.max_shift
    if s:
        padded = F.pad(batch, (s, s, s, s), mode="reflect")
        offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=rng)
        batch = torch.stack([padded[i, :, dy:dy + INPUT_SIZE, dx:dx + INPUT_SIZE]
                             for i, (dy, dx) in enumerate(offsets.tolist())])
    scale = 1.0 + (torch.rand(n, 1, 1, 1, generator=rng) * 2 - 1) * settings.brightness
    return (batch * scale).clamp_(0.0, 1.0)


def train_one(images: torch.Tensor, labels: np.ndarray, settings: GlassesTrainSettings, seed: int) -> GlassesCNN:
    """One model on all of `images` (prepared) with binary `labels` for a fixed number of epochs (the
    folds are validated outside, by cross_validate); returns it in eval mode."""
    targets = torch.as_tensor(labels, dtype=torch.float32)
    positives = float(targets.sum())
    pos_weight = torch.tensor((len(targets) - positives) / max(positives, 1.0))
    steps = settings.epochs * math.ceil(len(images) / settings.batch_size)
    loop_settings = LoopSettings(learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
                                 train_batch_size=settings.batch_size, max_epochs=settings.epochs, seed=seed,
                                 scheduler_step="batch", min_batch_size=2)  # batch norm needs two samples
    result = train_model(
        GlassesCNN, images, targets, np.arange(len(images)), np.zeros(0, np.int64),
        lambda logits, batch_targets: F.binary_cross_entropy_with_logits(logits, batch_targets, pos_weight=pos_weight),
        loop_settings, augment=lambda batch, rng: _augment(batch, settings, rng),
        make_scheduler=lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.learning_rate, total_steps=steps))
    return result.model


@torch.inference_mode()
def predict_probabilities(models: list[GlassesCNN], images: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Mean sigmoid over `models` (eval mode), batched; `images` prepared."""
    if not len(images):
        return np.zeros(0, np.float32)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        out.append(torch.stack([torch.sigmoid(m.eval()(chunk)) for m in models]).mean(0))
    return torch.cat(out).numpy()


def cross_validate(images: torch.Tensor, labels: np.ndarray, settings: GlassesTrainSettings,
                   progress: bool = True) -> tuple[list[GlassesCNN], np.ndarray]:
    """Stratified K-fold: the fold models and every image's out-of-fold probability."""
    splitter = StratifiedKFold(n_splits=settings.num_folds, shuffle=True, random_state=settings.seed)
    models, out_of_fold = [], np.zeros(len(labels), np.float32)
    folds = list(splitter.split(np.zeros(len(labels)), labels))
    for fold_no, (train_idx, val_idx) in enumerate(tqdm(folds, desc="glasses folds", disable=not progress)):
        model = train_one(images[train_idx], labels[train_idx], settings, seed=settings.seed * 1000 + fold_no)
        out_of_fold[val_idx] = predict_probabilities([model], images[val_idx])
        models.append(model)
    return models, out_of_fold


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold with the best F1 on (out-of-fold) scores: precision and recall both matter
    for a label that selects ~10% of faces."""
    best_f1, best = -1.0, 0.5
    for t in np.unique(scores):
        predicted = scores >= t
        tp = int((predicted & (labels == 1)).sum())
        f1 = 2 * tp / max(int(predicted.sum()) + int((labels == 1).sum()), 1)
        if f1 > best_f1:
            best_f1, best = f1, float(t)
    return best


def detection_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    metrics = binary_metrics(scores, labels, threshold)
    return dict(faces=int(len(labels)), with_glasses=int(np.sum(labels)), auroc=metrics["val_auroc"],
                precision=metrics["val_precision"], recall=metrics["val_recall"])


# ----------------------------------------------------------------------------------------------
# The shipped ensemble


def save_ensemble(path: str | Path, models: list[GlassesCNN], threshold: float, info: dict) -> None:
    state = {f"fold_{k}": {name: (t.half() if t.is_floating_point() else t) for name, t in m.state_dict().items()}
             for k, m in enumerate(models)}
    state["meta"] = {"threshold": torch.tensor(threshold, dtype=torch.float64), "info": json.dumps(info)}
    save_weights(path, state)


class GlassesDetector:
    """The shipped fold ensemble: `probabilities(images)` for uint8 faces of any square size."""

    def __init__(self, path: str | Path = MODEL_PATH):
        path = Path(path)
        retrain = "retrain with `python -m cnn.glasses`"
        state = read_weights(path, missing_hint=f"restore it from git or {retrain}")
        if not isinstance(state, dict) or not isinstance(state.get("meta"), dict):
            raise PipelineError(f"{path}: not a glasses model of this version (no 'meta' entry); {retrain}")
        self.models = []
        for key in sorted(k for k in state if k.startswith("fold_")):
            if not isinstance(state[key], dict):
                raise PipelineError(f"{path}: entry {key} is not a state dict; {retrain}")
            model = GlassesCNN()
            load_state_strict(model, {k: v.float() if v.is_floating_point() else v for k, v in state[key].items()},
                              f"{path} ({key}; {retrain})")
            self.models.append(model.eval())
        try:
            self.threshold = float(state["meta"]["threshold"])
            self.info = json.loads(state["meta"]["info"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"{path}: its 'meta' entry is incomplete ({type(exc).__name__}); {retrain}") from None
        if not self.models:
            raise PipelineError(f"{path}: holds no fold models; retrain with `python -m cnn.glasses`")

    def probabilities(self, images_uint8: np.ndarray | list[np.ndarray]) -> np.ndarray:
        images = np.stack(images_uint8) if isinstance(images_uint8, list) else images_uint8
        return predict_probabilities(self.models, prepare_images(images))


# ----------------------------------------------------------------------------------------------
# Training from the hand labels: python -m cnn.glasses


def read_hand_labels(path: str | Path = HAND_LABELS) -> pd.DataFrame:
    labels = pd.read_csv(path, comment="#")
    if list(labels.columns) != ["teacher_index", "glasses"] or not labels["glasses"].isin([-1, 0, 1]).all():
        raise PipelineError(f"{path}: expected columns teacher_index,glasses with values 1, 0 or -1")
    return labels


def labelled_faces() -> np.ndarray:
    """The hand-labelled teacher faces, NHWC uint8, index = teacher_index."""
    from common.images import to_uint8
    from stylegan.teacher_dcgan import sample_teacher_images

    with torch.inference_mode():
        return to_uint8(sample_teacher_images(LABELLED_COUNT, seed=LABELLED_SEED))


def train_from_hand_labels(settings: GlassesTrainSettings, output: str | Path = MODEL_PATH,
                           progress: bool = True) -> dict:
    labels = read_hand_labels()
    labels = labels[labels["glasses"] >= 0]
    faces = prepare_images(labelled_faces())
    train = labels[labels["teacher_index"] < TRAIN_END]
    test = labels[labels["teacher_index"] >= TRAIN_END]
    train_y = train["glasses"].to_numpy()
    models, out_of_fold = cross_validate(faces[torch.as_tensor(train["teacher_index"].values)], train_y, settings,
                                         progress)
    threshold = choose_threshold(out_of_fold, train_y)
    report = {"settings": asdict(settings), "threshold": threshold,
              "cross_validation": detection_metrics(out_of_fold, train_y, threshold)}
    if len(test):
        test_scores = predict_probabilities(models, faces[torch.as_tensor(test["teacher_index"].values)])
        report["test"] = detection_metrics(test_scores, test["glasses"].to_numpy(), threshold)
    save_ensemble(output, models, threshold, report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(MODEL_PATH))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=GlassesTrainSettings.epochs)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = train_from_hand_labels(GlassesTrainSettings(seed=args.seed, epochs=args.epochs), args.output)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
