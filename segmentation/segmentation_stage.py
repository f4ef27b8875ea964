"""Stage 3 runner: face crop (MTCNN) and face parsing of every filtered image.

For each `{no:06d}.png|jpg` of the input folder: MTCNN's largest box, enlarged by 50 % (clipped,
truncated to int), cropped and resized to 224x224 (bicubic); the profile's parser (FaceXFormer for
celeba256, the face-mesh parser for embedded) turns the crop into an 11-class map. Outputs, as the
original names them, in the output folder:

* `parsing_{no:06d}.png`  - 224x224 single-channel uint8 class map (values 0..10),
* `face_{no:06d}.png`     - the 224x224 face crop,
* `parsing_visualization_{no:06d}.png` - 50/50 blend of the crop and the class colours,
* `skipped_images.csv`    - img_no, img_path, reason for images without a (usable) face (never a crash),
* `segmentation_config.json` - the resolved options; and `<output folder>_grid.png` beside the folder.

Unlike the original, the models are built once and images go through in batches. Every file is
written atomically; an image whose three files exist (or that is listed as skipped) is not redone
unless `force`, so a killed run resumes.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from common.artifacts import FACES, FACEXFORMER_CHECKPOINT, grid_png
from common.config import check_choices, dump_config
from common.devices import check_device_name, choose_device, set_torch_threads
from common.paths import repo_relative, resolve_repo_path
from common.errors import PipelineError
from common.fileio import atomic_write_csv, list_numbered_images, load_image, save_image
from common.images import make_grid
from common.workers import spawned_pool
from segmentation.face_detection import CROP_SIZE, create_mtcnn, crop_face, detect_largest_faces

PARSERS = ("mesh", "facexformer")
CONFIG_FILE = "segmentation_config.json"
SKIPPED_FILE = "skipped_images.csv"
SKIPPED_COLUMNS = ["img_no", "img_path", "reason"]
NUM_CLASSES = 11
# RGB colour of each class 0..10 in the visualisations (the original's table).
CLASS_COLOURS = np.array([(0, 0, 0), (0, 153, 255), (102, 255, 153), (0, 204, 153), (255, 255, 102),
                          (255, 255, 204), (255, 153, 0), (255, 102, 255), (102, 0, 51), (255, 204, 255),
                          (255, 0, 102)], dtype=np.uint8)


@dataclass
class SegmentationConfig:
    """Section [segmentation] of a profile."""

    profile: str = "embedded"
    input_dir: str = field(default=FACES.filtered, metadata={
        "help": "folder of {no:06d}.png/.jpg images (written by run_cnn.py)"})
    output_dir: str = field(default=FACES.segmentation, metadata={
        "help": "folder for parsing_/face_/parsing_visualization_{no:06d}.png and skipped_images.csv"})
    parser: str = field(default="mesh", metadata={"choices": PARSERS,
        "help": "face parser: mesh (face-mesh landmarks, no download) or facexformer (needs CHECKPOINT)"})
    checkpoint: str = field(default=FACEXFORMER_CHECKPOINT, metadata={
        "help": "FaceXFormer checkpoint (parser = facexformer only)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda[:N] (MTCNN and FaceXFormer)"})
    batch_size: int = field(default=16, metadata={"help": "images per detection / parsing batch"})
    detection_upscale: int = field(default=256, metadata={
        "help": "images smaller than this are bicubically upscaled to it for MTCNN (0 = never)"})
    crop_enlarge: float = field(default=0.5, metadata={"help": "box growth before cropping (0.5 = 25 %% per side)"})
    min_mesh_score: float = field(default=0.5, metadata={
        "help": "mesh parser: skip crops whose face-mesh score is below this (0 = keep all)"})
    num_threads: int = field(default=0, metadata={"help": "CPU threads for torch and the mesh parser (0 = default)"})
    workers: int = field(default=2, metadata={
        "help": "parse batches in this many worker processes, one thread each (CPU only; the mesh parser is "
                "single-threaded Python and OpenCV, so one worker per core nearly divides the time)"})
    grid_images: int = field(default=16, metadata={"help": "how many results the preview grid shows"})

    def validate(self) -> None:
        check_choices(self, "segmentation")
        if self.batch_size < 1:
            raise PipelineError(f"[segmentation] batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise PipelineError(f"[segmentation] workers must be >= 1, got {self.workers}")
        if self.detection_upscale < 0 or self.num_threads < 0 or self.grid_images < 0:
            raise PipelineError("[segmentation] detection_upscale, num_threads and grid_images must be >= 0")
        if not 0.0 <= self.min_mesh_score <= 1.0:
            raise PipelineError(f"[segmentation] min_mesh_score must be in [0, 1], got {self.min_mesh_score}")
        if not 0.0 <= self.crop_enlarge <= 4.0:
            raise PipelineError(f"[segmentation] crop_enlarge must be in [0, 4], got {self.crop_enlarge}")
        check_device_name(self.device, "[segmentation] device")


@dataclass(frozen=True)
class InputImage:
    img_no: int
    path: Path


@dataclass
class SegmentationSummary:
    parsed: int
    skipped: int            # this run: no face (or unreadable), listed in skipped_images.csv
    already_done: int       # earlier runs: parsed, or skipped (those are counted in skipped_before too)
    skipped_before: int
    seconds: float
    output_dir: Path
    grid_path: Path | None
    skipped_rows: list[dict] = field(default_factory=list)

    def line(self) -> str:
        rate = f" ({self.seconds / self.parsed * 1000:.0f} ms/image)" if self.parsed else ""
        return (f"parsed {self.parsed} / skipped {self.skipped} (no usable face, see {SKIPPED_FILE}) / already done "
                f"{self.already_done} ({self.skipped_before} of them skipped earlier) in {self.seconds:.1f} s{rate}"
                f" -> {repo_relative(self.output_dir)}")



def output_paths(output_dir: Path, img_no: int) -> dict[str, Path]:
    return {"parsing": output_dir / f"parsing_{img_no:06d}.png",
            "face": output_dir / f"face_{img_no:06d}.png",
            "visualization": output_dir / f"parsing_visualization_{img_no:06d}.png"}


def list_input_images(input_dir: Path) -> list[InputImage]:
    """The numbered images of the folder, by number; a missing or empty folder names the stage that fills it."""
    images = list_numbered_images(input_dir, "input", "run run_cnn.py (stage 2) first, it writes the filtered images "
                                                      "there")
    return [InputImage(no, path) for no, path in images.items()]


def colourise(class_map: np.ndarray) -> np.ndarray:
    """[H, W] class indices -> [H, W, 3] uint8 RGB class colours (out-of-range indices are black)."""
    safe = np.where(class_map < NUM_CLASSES, class_map, 0)
    return CLASS_COLOURS[safe]


def visualise(crop: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """50/50 blend of the crop and its class colours (rounded)."""
    return cv2.addWeighted(crop, 0.5, colourise(class_map), 0.5, 0.0)


def build_face_parser(config: SegmentationConfig, device: torch.device):
    """The profile's parser, built once; both offer parse(crops [N,224,224,3] uint8) -> [N,224,224] uint8."""
    if config.parser == "facexformer":
        from segmentation.facexformer import FaceXFormerParser

        return FaceXFormerParser(resolve_repo_path(config.checkpoint), device, config.batch_size)
    from segmentation.mesh_parser import MeshFaceParser

    return MeshFaceParser(num_threads=max(config.num_threads, 1), min_face_score=config.min_mesh_score)


def parse_crops(face_parser, crops: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Class maps and, per crop, why to skip it (None = keep).

    Only the mesh parser can tell that a crop holds no usable face (parse_with_reasons); for
    FaceXFormer, as in the original, every MTCNN crop is parsed.
    """
    with_reasons = getattr(face_parser, "parse_with_reasons", None)
    if with_reasons is not None:
        return with_reasons(crops)
    return face_parser.parse(crops), [None] * len(crops)


def read_skipped(output_dir: Path) -> dict[int, dict]:
    """Rows of skipped_images.csv by image number (empty when there is none)."""
    path = output_dir / SKIPPED_FILE
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path, dtype={"img_path": str, "reason": str})
    except pd.errors.EmptyDataError:
        return {}
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a readable CSV ({exc}); delete it and re-run") from None
    if list(table.columns) != SKIPPED_COLUMNS:
        raise PipelineError(f"{path}: expected columns {', '.join(SKIPPED_COLUMNS)}; delete it and re-run")
    return {int(r.img_no): {"img_no": int(r.img_no), "img_path": r.img_path, "reason": r.reason}
            for r in table.itertuples(index=False)}


def write_skipped(output_dir: Path, rows: dict[int, dict]) -> None:
    table = pd.DataFrame([rows[k] for k in sorted(rows)], columns=SKIPPED_COLUMNS)
    atomic_write_csv(table, output_dir / SKIPPED_FILE, index=False)


UNREADABLE = "unreadable image file"


def is_done(output_dir: Path, img_no: int) -> bool:
    """Its three files exist and are not empty (a file deleted or emptied after damage is redone without --force)."""
    return all(p.is_file() and p.stat().st_size > 0 for p in output_paths(output_dir, img_no).values())


def crop_faces(mtcnn, images: list[np.ndarray], config: SegmentationConfig) -> list[np.ndarray | str]:
    """Per image its 224x224 face crop, or the reason why there is none."""
    upscale = config.detection_upscale or None
    boxes = detect_largest_faces(mtcnn, images, upscale_to=upscale, batch_size=config.batch_size)
    results: list[np.ndarray | str] = []
    for image, face in zip(images, boxes):
        if face is None:
            results.append("no face detected by MTCNN")
            continue
        try:
            results.append(crop_face(image, face.box, CROP_SIZE, config.crop_enlarge))
        except ValueError:
            results.append(f"empty face box {tuple(round(v, 1) for v in face.box)}")
    return results


def plan_work(config: SegmentationConfig, force: bool = False) -> tuple[list[InputImage], list[InputImage]]:
    """(all input images, those still to do): done = its three files exist or it is listed as skipped."""
    output_dir = resolve_repo_path(config.output_dir)
    images = list_input_images(resolve_repo_path(config.input_dir))
    if force:
        return images, images
    # An image skipped as unreadable by an older run is tried again (it may have been repaired since).
    skipped = {no for no, row in read_skipped(output_dir).items() if row.get("reason") != UNREADABLE}
    return images, [im for im in images if not (is_done(output_dir, im.img_no) or im.img_no in skipped)]


def check_inputs(images: list[InputImage]) -> None:
    """Decode every image before anything is written: a truncated, grayscale or unreadable input stops the stage
    with one line naming it, instead of being recorded as a face-less image and silently lost. The images of one
    folder come from one generator, so one of another size (another profile's) is named too."""
    sizes = {item.path: load_image(item.path).shape[:2]
             for item in tqdm(images, desc="check inputs", unit="img", leave=False, disable=len(images) < 500)}
    usual = Counter(sizes.values()).most_common(1)[0][0] if sizes else None
    odd = next((path for path, size in sizes.items() if size != usual), None)
    if odd is not None:
        raise PipelineError(f"{odd}: image is {sizes[odd][1]}x{sizes[odd][0]}, the others are {usual[1]}x{usual[0]}; "
                            f"re-run run_cnn.py (stage 2), or stages 1-2 with the matching --profile")


def run_segmentation(config: SegmentationConfig, force: bool = False, progress: bool = True) -> SegmentationSummary:
    """Crop and parse every image of the input folder that is not done yet; returns the counts."""
    output_dir = resolve_repo_path(config.output_dir)
    images, todo = plan_work(config, force)
    previous_skips = read_skipped(output_dir)
    already_done = len(images) - len(todo)
    todo_numbers = {im.img_no for im in todo}
    skipped_before = sum(1 for im in images if im.img_no in previous_skips and im.img_no not in todo_numbers)
    if not todo:
        grid = write_preview_grid(output_dir, [im.img_no for im in images], config.grid_images)
        return SegmentationSummary(0, 0, already_done, skipped_before, 0.0, output_dir, grid)
    check_inputs(todo)

    start = time.perf_counter()
    batches = [todo[i:i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    device = choose_device(config.device)
    workers = min(config.workers, len(batches)) if device.type == "cpu" else 1
    if workers == 1:
        set_torch_threads(config.num_threads)
    # Built here even when workers do the parsing: a missing checkpoint or package is a one-line error before
    # anything is written, not a broken worker pool.
    models = SegmentationModels(config, device)
    output_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, output_dir / CONFIG_FILE)

    # Rows of the images redone now leave the table; those of earlier runs stay.
    skipped_rows = {no: row for no, row in previous_skips.items() if no not in todo_numbers}
    parsed = 0
    new_skips: list[dict] = []
    bar = tqdm(total=len(todo), unit="img", desc=f"segmentation ({config.parser})", disable=not progress,
               dynamic_ncols=True)
    pool = spawned_pool(workers, initializer=_start_worker, initargs=(config,))
    if pool is not None:
        results = pool.map(_segment_batch_in_worker, batches, [output_dir] * len(batches))
    else:
        results = (models.segment_batch(batch, output_dir) for batch in batches)
    try:
        for batch, (batch_parsed, batch_skips) in zip(batches, results):
            parsed += batch_parsed
            for row in batch_skips:
                skipped_rows[row["img_no"]] = row
                bar.write(f"skipped {row['img_path']}: {row['reason']}", file=sys.stderr)
            if batch_skips:  # written at once, so a killed run keeps what it learnt
                write_skipped(output_dir, skipped_rows)
            new_skips += batch_skips
            bar.update(len(batch))
            bar.set_postfix(parsed=parsed, skipped=len(new_skips))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    write_skipped(output_dir, skipped_rows)
    seconds = time.perf_counter() - start
    grid = write_preview_grid(output_dir, [im.img_no for im in images], config.grid_images)
    return SegmentationSummary(parsed, len(new_skips), already_done, skipped_before, seconds, output_dir, grid,
                               new_skips)


class SegmentationModels:
    """MTCNN and the face parser, built once per process."""

    def __init__(self, config: SegmentationConfig, device: torch.device):
        self.config = config
        self.face_parser = build_face_parser(config, device)
        self.mtcnn = create_mtcnn(device)

    def segment_batch(self, batch: list[InputImage], output_dir: Path) -> tuple[int, list[dict]]:
        """Crop, parse and write one batch of images; (images parsed, skip rows)."""
        skips: list[dict] = []
        loaded: list[tuple[InputImage, np.ndarray]] = []
        for item in batch:
            try:
                loaded.append((item, load_image(item.path)))
            except PipelineError:  # checked before the run: only a file damaged while the stage runs gets here
                skips.append(_skip_row(item, UNREADABLE))
        crops = crop_faces(self.mtcnn, [image for _, image in loaded], self.config)
        with_face = []
        for (item, _), crop in zip(loaded, crops):
            if isinstance(crop, str):
                skips.append(_skip_row(item, crop))
            else:
                with_face.append((item, crop))
        parsed = 0
        if with_face:
            class_maps, reasons = parse_crops(self.face_parser, np.stack([crop for _, crop in with_face]))
            for (item, crop), class_map, reason in zip(with_face, class_maps, reasons):
                if reason is not None:
                    skips.append(_skip_row(item, reason))
                    continue
                paths = output_paths(output_dir, item.img_no)
                save_image(crop, paths["face"])
                save_image(visualise(crop, class_map), paths["visualization"])
                save_image(np.ascontiguousarray(class_map, dtype=np.uint8), paths["parsing"])
                parsed += 1
        return parsed, skips


_WORKER_MODELS: SegmentationModels | None = None


def _start_worker(config: SegmentationConfig) -> None:
    """Worker-process initialiser: one thread (the workers are the parallelism), models built once."""
    global _WORKER_MODELS
    torch.set_num_threads(1)
    config = dataclasses.replace(config, num_threads=1)
    _WORKER_MODELS = SegmentationModels(config, torch.device("cpu"))


def _segment_batch_in_worker(batch: list[InputImage], output_dir: Path) -> tuple[int, list[dict]]:
    return _WORKER_MODELS.segment_batch(batch, output_dir)


def _skip_row(item: InputImage, reason: str) -> dict:
    return {"img_no": item.img_no, "img_path": repo_relative(item.path), "reason": reason}


def write_preview_grid(output_dir: Path, numbers: list[int], count: int) -> Path | None:
    """`<output folder>_grid.png`: pairs of (face crop, visualisation) of the first `count` parsed images."""
    if count <= 0:
        return None
    tiles = []
    for img_no in numbers:
        paths = output_paths(output_dir, img_no)
        if not (paths["face"].is_file() and paths["visualization"].is_file()):
            continue
        tiles += [load_image(paths["face"]), load_image(paths["visualization"])]
        if len(tiles) >= 2 * count:
            break
    if not tiles:
        return None
    grid_path = Path(grid_png(str(output_dir)))
    save_image(make_grid(np.stack(tiles), ncols=min(8, len(tiles))), grid_path)
    return grid_path
