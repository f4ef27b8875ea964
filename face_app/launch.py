"""Wiring the app to the repository's files (generator, directions, faces, labels); the [app] config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common import artifacts
from common.errors import PipelineError
from face_app.offline import set_offline_environment


@dataclass
class AppConfig:
    profile: str = "embedded"
    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (loopback by default)"})
    port: int = 7860
    generator: str = field(default="", metadata={
        "help": "generator checkpoint; empty = VectorFind's choice (FineTune-v8, else v1, else the base)"})
    seed: int = field(default=0, metadata={"help": "first seeded face when no evaluated faces exist"})
    num_threads: int = field(default=1, metadata={
        "help": "torch threads for rendering; 1 is fastest for one 64 px face on a shared machine"})
    vectorfind_dir: str = field(default=artifacts.VECTORFIND, metadata={
        "help": "VectorFind's output folder: its chosen directions (shown as 'chosen'), both direction sets (plain, "
                "conditional) where present, ohlora_z_vectors.csv, ohlora_w_group_names.csv and "
                "image_generation_report/"})
    saved_dir: str = field(default=artifacts.FACE_APP_SAVED, metadata={"help": "where save and play write their files"})
    schema: str = field(default="stage2", metadata={"help": "label schema: stage2 (gender, quality) or v8 "
                                                            "(gender, quality, age, glass)"})
    images_dir: str = field(default=artifacts.FACES.images, metadata={"help": "images to label"})
    labels_csv: str = field(default=artifacts.FACES.labels_csv,
                            metadata={"help": "label CSV the stage reads; hand labels are written to it"})
    label_id_column: str = "img_name"
    play_seconds: float = 12.0
    play_fps: float = 10.0
    device: str = field(default="auto", metadata={"help": "auto (cuda when available, else cpu), cpu, cuda or cuda:N"})

    def validate(self) -> None:
        from common.devices import check_device_name

        check_device_name(self.device, "[app] device")
        from face_app.labeling import schema_by_name

        schema_by_name(self.schema)
        if self.num_threads < 1:
            raise PipelineError(f"[app] num_threads must be >= 1, got {self.num_threads}")
        if self.play_seconds <= 0 or self.play_fps <= 0:
            raise PipelineError("[app] play_seconds and play_fps must be > 0")


def vectorfind_edit_layers(profile: str, num_layers: int) -> tuple[int, int] | None:
    """The profile's [vectorfind] edit_layers as (first, last), None for all layers (or a range this generator
    does not have)."""
    from common.config import resolve_config
    from vectorfind.settings import VectorFindConfig, parse_layer_range

    layers = parse_layer_range(resolve_config(VectorFindConfig, "vectorfind", profile=profile).edit_layers)
    return layers if layers is not None and layers[1] < num_layers else None


def build_from_repo(config: AppConfig, repo_root: Path | None = None, strict: bool = False):
    """The Gradio app for the output root's files, and the editor behind it; `strict`: every direction set complete
    (run_app.py --check)."""
    from common.devices import set_torch_threads
    from common.paths import output_root
    from face_app.app import build_app
    from face_app.cases import face_choices, check_latent_width
    from face_app.editing import FaceEditor, load_app_generator, read_direction_sets
    from face_app.labeling import LabelStore, schema_by_name

    root = output_root() if repo_root is None else repo_root
    set_torch_threads(config.num_threads)
    generator, choice = load_app_generator(config.generator, config.profile, config.device)
    label_size, path = choice.label_size, choice.path
    direction_sets = read_direction_sets({"chosen": root / artifacts.vectors_dir(None, config.vectorfind_dir),
                                          **{kind: root / artifacts.vectors_dir(kind, config.vectorfind_dir)
                                             for kind in artifacts.DIRECTION_KINDS}},
                                         strict=strict)
    editor = FaceEditor(generator, direction_sets=direction_sets, label_size=label_size)
    latent_dim = generator.z_space_dim + label_size
    faces, source = face_choices(root / config.vectorfind_dir, latent_dim, config.seed)
    check_latent_width(faces, latent_dim, source)
    store = LabelStore.for_folder(root / config.labels_csv, root / config.images_dir, schema_by_name(config.schema),
                                  config.label_id_column)
    app = build_app(editor, faces, store=store, vectorfind_dir=root / config.vectorfind_dir,
                    saved_dir=root / config.saved_dir, play_seconds=config.play_seconds, play_fps=config.play_fps,
                    edit_layers=vectorfind_edit_layers(config.profile, editor.num_layers),
                    notes={"generator": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
                           "faces": source, "vectors": artifacts.vectors_dir(None, config.vectorfind_dir)})
    return app, editor


def launch_from_repo(config: AppConfig) -> None:
    from face_app.app import serve

    set_offline_environment()
    app, _ = build_from_repo(config)
    print(f"face app on http://{config.host}:{config.port} (Ctrl-C stops it)")
    serve(app, config.host, config.port)
