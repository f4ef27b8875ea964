"""Wiring the app to the repository's files (generator, directions, labels)."""

from __future__ import annotations

from common.config import REPO_ROOT, resolve_config
from face_app.app import build_app
from face_app.editing import FaceEditor, pick_generator_path
from face_app.labeling import STAGE2_SCHEMA, LabelStore
from stylegan.checkpoint import load_generator
from stylegan.generate import GeneratorConfig, sample_latents
from vectorfind.directions import GROUP_NAMES, load_directions


def launch_from_repo(profile: str, host: str, port: int, seed: int) -> None:
    config = resolve_config(GeneratorConfig, "generator", profile=profile)
    generator = load_generator(pick_generator_path(REPO_ROOT), config.checkpoint_entry,
                               **config.generator_kwargs())
    directions = load_directions(REPO_ROOT / "vectorfind/v8/property_score_vectors", GROUP_NAMES[0])
    editor = FaceEditor(generator, directions)
    z = sample_latents(seed, [0], generator.z_space_dim, generator.num_layers, 0.0).z[0]
    images_dir = REPO_ROOT / "stylegan/synthesize_results"
    names = sorted(int(p.stem) for p in images_dir.glob("*.png"))
    store = LabelStore(REPO_ROOT / "cnn/synthesize_results_quality_and_gender.csv", names, STAGE2_SCHEMA)
    app = build_app(editor, editor.w_from_z(z), store, images_dir)
    print(f"face app on http://{host}:{port}")
    app.launch(server_name=host, server_port=port, share=False)
