"""The Label tab's store: one CSV row per answered image, written atomically after every answer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.fileio import atomic_write_csv

# One key per answer, as the tab shows them.
STAGE2_SCHEMA = {"gender": {"f": 1, "m": 0}, "quality": {"g": 1, "b": 0}}
V8_SCHEMA = {"gender": {"f": 1, "m": 0}, "quality": {"g": 1, "b": 0}, "age": {"y": 0, "o": 1},
             "glass": {"n": 0, "s": 1}}


@dataclass
class LabelStore:
    csv_path: Path
    image_names: list[int]
    schema: dict[str, dict[str, int]]
    id_column: str = "img_name"

    def read(self) -> pd.DataFrame:
        if self.csv_path.is_file():
            return pd.read_csv(self.csv_path)
        return pd.DataFrame(columns=[self.id_column, *self.schema])

    def labelled(self) -> set[int]:
        frame = self.read()
        complete = frame.dropna(subset=list(self.schema))
        return {int(v) for v in complete[self.id_column]}

    def first_unlabelled(self) -> int:
        done = self.labelled()
        for position, name in enumerate(self.image_names):
            if name not in done:
                return position
        return len(self.image_names)

    def save(self, name: int, answers: dict[str, int]) -> None:
        """Write one image's answers as a hand label; rows of other images stay as they are."""
        frame = self.read()
        row = {self.id_column: name, **answers}
        if "label_source" in frame.columns or self.id_column == "img_name":
            row["label_source"] = "hand"
        frame = frame[frame[self.id_column].astype(int) != name]
        frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
        frame = frame.sort_values(self.id_column, kind="stable")
        for column in [self.id_column, *self.schema]:
            frame[column] = frame[column].astype("Int64")
        atomic_write_csv(frame, self.csv_path, index=False)
