"""Stage 2's labels: the labels file read and checked, written by the bundled annotator where asked, matched to the
generated images, and the properties too scarce in them to train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cnn.annotate import LABEL_COLUMNS, SIGNAL_COLUMNS, FaceAnnotator
from cnn.config import CnnConfig
from common import artifacts
from common.errors import PipelineError, log_line
from common.fileio import atomic_write_csv, load_images, read_csv_checked
from common.freshness import digest

LABEL_ID = "img_name"  # the id column's name inside the stage, whatever the labels file calls it
ANNOTATOR_SOURCE = "annotator"


def read_labels(path: Path, id_column: str = "img_name",
                label_columns: tuple[str, ...] = ("quality", "gender")) -> pd.DataFrame:
    """The label file as img_name + label_columns (ints 0/1), plus label_source if present; the id
    column is renamed to img_name inside the stage."""
    frame = read_csv_checked(path, "fix it, or delete it to have the annotator write it again (embedded)")
    required = (id_column, *label_columns)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)} "
                            "(one 0/1 column per property: quality 1 = good, gender 1 = female, age 1 = looks old, "
                            "glass 1 = wears glasses)")
    if frame.empty:
        raise PipelineError(f"{path}: no label rows")
    for column in required:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if column != id_column:
            bad |= ~values.isin([0, 1])
        elif not bad.any():
            bad |= values < 0
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise PipelineError(f"{path}: row {row + 2} has {column} = '{frame[column].iloc[row]}'; expected "
                                + ("a non-negative image number" if column == id_column else "0 or 1"))
        frame[column] = values.astype(int)
    if frame[id_column].duplicated().any():
        img = int(frame.loc[frame[id_column].duplicated(), id_column].iloc[0])
        raise PipelineError(f"{path}: {id_column} {img} appears more than once")
    keep = list(required) + (["label_source"] if "label_source" in frame.columns else [])
    frame = frame[keep].rename(columns={id_column: LABEL_ID})
    return frame.sort_values(LABEL_ID, kind="stable").reset_index(drop=True)


def config_labels(config: CnnConfig, path: Path | None = None) -> pd.DataFrame:
    """The config's labels file, with one column per property named after the property."""
    rules = config.rules()
    labels = read_labels(path or config.path("labels_csv"), config.label_id_column,
                         tuple(r.label_column for r in rules))
    return labels.rename(columns={r.label_column: r.name for r in rules})


def labels_fingerprint(labels: pd.DataFrame, properties: list[str]) -> str:
    """What the fold models learn from (labels_sha256 of model_info.json): the id and property columns."""
    return digest(labels[[LABEL_ID, *properties]])


def write_annotator_labels(config: CnnConfig, images: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """Annotate the first num_labelled images; write the label CSV (with label_source) and the raw
    signals beside it. Returns the label frame."""
    unknown = [r.name for r in config.rules() if r.name not in LABEL_COLUMNS]
    if unknown:
        raise PipelineError(f"the bundled annotator labels only {', '.join(LABEL_COLUMNS)}, not {', '.join(unknown)}; "
                            f"supply {config.path('labels_csv')} by hand")
    chosen = images.iloc[:min(config.num_labelled, len(images))]
    pixels = load_images(list(chosen["path"]), config.resolution, progress=progress)
    annotator = FaceAnnotator(config.thresholds())
    annotated = annotator.annotate(list(pixels), progress=progress)
    annotated.insert(0, LABEL_ID, chosen["img_no"].to_numpy())
    rules = config.rules()
    labels = annotated[[LABEL_ID, *(r.name for r in rules)]].copy()
    labels["label_source"] = ANNOTATOR_SOURCE
    labels_path = config.path("labels_csv")
    written = labels.rename(columns={LABEL_ID: config.label_id_column, **{r.name: r.label_column for r in rules}})
    atomic_write_csv(written, labels_path, index=False)
    signals_path = labels_path.with_name(artifacts.ANNOTATOR_SIGNALS)
    atomic_write_csv(annotated[[LABEL_ID, *SIGNAL_COLUMNS, *LABEL_COLUMNS]].round(6), signals_path, index=False)
    return labels


def obtain_labels(config: CnnConfig, images: pd.DataFrame, force: bool, log=log_line) -> pd.DataFrame:
    labels_path = config.path("labels_csv")
    if labels_path.is_file():
        labels = config_labels(config)
        from_annotator = "label_source" in labels and (labels["label_source"] == ANNOTATOR_SOURCE).all()
        if not (force and from_annotator and config.annotate):
            return labels  # hand labels (or --force not given): never overwritten
        log(f"re-annotating {labels_path} (--force)")
    elif not config.annotate:
        columns = ", ".join([config.label_id_column, *(r.label_column for r in config.rules())])
        raise PipelineError(f"{labels_path}: label file not found; supply it (columns {columns}; "
                            "see README, 'Stage 2 labels') or pass --annotate to label with the bundled annotator")
    else:
        log(f"{labels_path} not found: annotating the first {min(config.num_labelled, len(images))} images")
    return write_annotator_labels(config, images)


def generated_labels(config: CnnConfig, labels: pd.DataFrame, images: pd.DataFrame, log=log_line) -> pd.DataFrame:
    """The label rows of images that were generated (others are left out, logged); none is an error."""
    present = labels[LABEL_ID].isin(images["img_no"])
    if not present.all():
        log(f"ignoring {int((~present).sum())} label row(s) for images that were not generated")
        labels = labels[present].reset_index(drop=True)
    if labels.empty:
        raise PipelineError(f"{config.path('labels_csv')}: none of the labelled images is in {config.path('images_dir')}")
    return labels


def scarce_properties(config: CnnConfig, labels: pd.DataFrame) -> dict[str, str]:
    """Properties whose rarer class has fewer labelled images than folds: name -> reason."""
    scarce = {}
    for prop in config.property_names:
        counts = np.bincount(labels[prop].to_numpy().astype(int), minlength=2)
        if counts.min() < config.num_folds:
            scarce[prop] = (f"{counts.min()} of {len(labels)} labelled images are {int(counts.argmin())}, "
                            f"fewer than the {config.num_folds} folds")
    return scarce
