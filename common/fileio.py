"""Atomic writes: a file is either complete or absent, so a killed stage never leaves half a file."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

# A generated image of stage 1 (and of the v8 dataset): its number, zero-padded, and the format.
IMAGE_NAME = re.compile(r"^(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    except OSError as exc:  # a write into an open file (pandas, numpy, write_bytes) names no file, a write to the
        if exc.filename in (None, str(tmp_path)):  # temporary one names a file that is gone: name the target
            exc.filename = str(path)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_csv(df, path: str | Path, **kwargs) -> None:
    """Write a pandas DataFrame atomically (to_csv keyword arguments pass through)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def save_image(array: np.ndarray, path: str | Path, jpeg_quality: int = 95) -> None:
    """Save an HWC uint8 RGB (or HW grayscale) array atomically; the format follows the suffix."""
    import cv2

    path = Path(path)
    if array.ndim == 3:
        array = array[:, :, ::-1]  # OpenCV writes BGR
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(path.suffix, np.ascontiguousarray(array), params)
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def list_numbered_images(folder: str | Path, what: str = "image", fill: str | None = None) -> dict[int, Path]:
    """{number: path}, sorted, of the images in `folder` named by their number (000123.png, 7.jpg). `fill` says what
    writes the folder: a missing folder, one without such images or a number that appears twice is then a one-line
    PipelineError naming the `what` folder and that fix; with fill None a missing or empty folder is just {}."""
    from common.errors import PipelineError

    folder = Path(folder)
    if not folder.is_dir():
        if fill is None:
            return {}
        raise PipelineError(f"{folder}: {what} folder not found; {fill}")
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = IMAGE_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        number = int(match.group(1))
        if number in found and fill is not None:
            raise PipelineError(f"{folder}: image number {number} appears twice ({found[number].name}, {path.name}); "
                                f"keep one of them")
        found.setdefault(number, path)
    if not found and fill is not None:
        raise PipelineError(f"{folder}: no {{img_no:06d}}.png/.jpg images; {fill}")
    return dict(sorted(found.items()))


def load_image(path: str | Path, resolution: int | None = None) -> np.ndarray:
    """Read an image as HWC uint8 RGB, decoded in full; a missing, truncated or corrupt file, a grayscale image or
    (with `resolution`) one of another size is a one-line PipelineError naming the file."""
    import cv2

    from common.errors import PipelineError

    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if image is None:
        raise PipelineError(f"{path}: missing, truncated or not a readable image; re-run the stage that writes it")
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise PipelineError(f"{path}: a {channels}-channel {image.dtype} image, expected 8-bit RGB; "
                            f"re-run the stage that writes it")
    if resolution is not None and image.shape[:2] != (resolution, resolution):
        raise PipelineError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, the profile expects "
                            f"{resolution}x{resolution}; use the matching --profile or --resolution, or re-run the "
                            f"stage that writes it")
    return image[:, :, 2::-1].copy()  # BGR(A) -> RGB


def load_images(paths: list[Path], resolution: int, progress: bool = False) -> np.ndarray:
    """[N, R, R, 3] uint8 RGB, every file checked by load_image (no silent resizing)."""
    from tqdm import tqdm

    out = np.empty((len(paths), resolution, resolution, 3), np.uint8)
    for i, path in enumerate(tqdm(paths, desc="load images", unit="img", disable=not progress, leave=False)):
        out[i] = load_image(path, resolution)
    return out


def read_csv_checked(path: str | Path, fix: str, **kwargs):
    """A CSV another stage (or a person) wrote, as a DataFrame; a missing, empty, unreadable file or one cut in the
    middle of a row (every CSV this project writes ends with a line end) is a one-line PipelineError naming the file
    and `fix` (what to do, e.g. "re-run compute_property_scores.py (stage 4)")."""
    import pandas as pd

    from common.errors import PipelineError

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: not found; {fix}")
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
    if size == 0:
        raise PipelineError(f"{path}: empty file; {fix}")
    if last not in (b"\n", b"\r"):
        raise PipelineError(f"{path}: cut in the middle of a row (no line end at the end: it was not written "
                            f"completely); {fix}")
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise PipelineError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]}); {fix}") from None
