"""The Label tab's store: one CSV row per answered image, written atomically after every answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.errors import PipelineError
from common.fileio import atomic_write_csv, list_numbered_images

# One key per answer, as the tab shows them (1 = female / good / old / glasses, the stages' convention).
STAGE2_SCHEMA = {"gender": {"f": 1, "m": 0}, "quality": {"g": 1, "b": 0}}
V8_SCHEMA = {"gender": {"f": 1, "m": 0}, "quality": {"g": 1, "b": 0}, "age": {"y": 0, "o": 1},
             "glass": {"n": 0, "s": 1}}
SCHEMAS = {"stage2": STAGE2_SCHEMA, "v8": V8_SCHEMA}
HAND_SOURCE = "hand"
ANNOTATOR_SOURCE = "annotator"  # rows the stage-2 annotator wrote: a person may replace them
BACK_KEY, FORWARD_KEY = "<", ">"


def schema_by_name(name: str) -> dict[str, dict[str, int]]:
    if name not in SCHEMAS:
        raise PipelineError(f"unknown label schema {name!r}; choose one of: {', '.join(SCHEMAS)}")
    return SCHEMAS[name]


def list_images(folder: Path) -> dict[int, Path]:
    """{image number: path} for files named by their number (000123.png / 123.jpg) in folder."""
    return list_numbered_images(folder)


@dataclass
class LabelStore:
    csv_path: Path
    image_names: list[int]
    schema: dict[str, dict[str, int]]
    id_column: str = "img_name"
    image_paths: dict[int, Path] = field(default_factory=dict)
    images_dir: Path | None = None

    @classmethod
    def for_folder(cls, csv_path: Path, images_dir: Path, schema: dict[str, dict[str, int]],
                   id_column: str = "img_name") -> "LabelStore":
        paths = list_images(images_dir)
        return cls(Path(csv_path), list(paths), schema, id_column, paths, Path(images_dir))

    def read(self) -> pd.DataFrame:
        if not self.csv_path.is_file():
            return pd.DataFrame(columns=[self.id_column, *self.schema])
        try:
            frame = pd.read_csv(self.csv_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise PipelineError(f"{self.csv_path}: not a readable CSV ({str(exc).splitlines()[0]}); "
                                f"fix or move it") from None
        missing = [c for c in (self.id_column, *self.schema) if c not in frame.columns]
        if missing and len(frame):
            raise PipelineError(f"{self.csv_path}: missing column(s) {', '.join(missing)}; this schema needs "
                                f"{', '.join([self.id_column, *self.schema])} (choose the matching --schema)")
        for column in missing:
            frame[column] = pd.NA
        return frame

    def answers(self) -> dict[int, dict[str, int]]:
        """Complete label rows a person gave (or supplied), by image; annotator rows do not count."""
        frame = self.read().dropna(subset=[self.id_column, *self.schema])
        if "label_source" in frame.columns:
            frame = frame[frame["label_source"].astype(str) != ANNOTATOR_SOURCE]
        return {int(r[self.id_column]): {q: int(r[q]) for q in self.schema} for _, r in frame.iterrows()}

    def labelled(self) -> set[int]:
        return set(self.answers())

    def first_unlabelled(self) -> int:
        done = self.labelled()
        for position, name in enumerate(self.image_names):
            if name not in done:
                return position
        return len(self.image_names)

    def image_path(self, name: int) -> Path:
        return self.image_paths.get(name) or self.csv_path.parent / f"{name:06d}.png"

    def save(self, name: int, answers: dict[str, int]) -> None:
        """Write one image's answers as a hand label; rows of other images stay as they are."""
        frame = self.read()
        row = {self.id_column: name, **answers}
        if "label_source" in frame.columns or self.id_column == "img_name":
            row["label_source"] = HAND_SOURCE
        frame = frame[pd.to_numeric(frame[self.id_column], errors="coerce") != name]
        frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True) if len(frame) else pd.DataFrame([row])
        frame = frame.sort_values(self.id_column, kind="stable")
        for column in [self.id_column, *self.schema]:
            frame[column] = pd.to_numeric(frame[column]).astype("Int64")
        atomic_write_csv(frame, self.csv_path, index=False)


@dataclass
class LabelSession:
    """Where a person is: the image position and the answers typed so far for it."""

    position: int
    given: dict[str, int] = field(default_factory=dict)


def apply_keys(store: LabelStore, session: LabelSession, keys: str) -> LabelSession:
    """Feed typed keys: answer keys fill the current image's questions in schema order (saved once all
    are answered); BACK_KEY / FORWARD_KEY move one image without saving; other keys are ignored."""
    questions = list(store.schema)
    position, given = session.position, dict(session.given)
    for char in keys.lower():
        if char == BACK_KEY:
            position, given = max(0, position - 1), {}
            continue
        if char == FORWARD_KEY:
            position, given = min(len(store.image_names), position + 1), {}
            continue
        if position >= len(store.image_names):
            continue
        question = questions[len(given)]
        if char in store.schema[question]:
            given[question] = store.schema[question][char]
        if len(given) == len(questions):
            store.save(store.image_names[position], given)
            position, given = position + 1, {}
    return LabelSession(position, given)
