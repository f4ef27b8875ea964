"""The Gradio Blocks app: Edit, Select and Label tabs, fully offline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from common.fileio import atomic_write_csv, load_image
from face_app.editing import PROPERTIES, FaceEditor
from face_app.labeling import LabelStore

# Set before gradio is imported anywhere: no analytics, no hub calls.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def write_selection(cases: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """ohlora_z_vectors.csv (z columns) and ohlora_w_group_names.csv (group_name) for the chosen cases."""
    z_columns = [c for c in cases.columns if str(c).startswith("z")]
    z_path, group_path = out_dir / "ohlora_z_vectors.csv", out_dir / "ohlora_w_group_names.csv"
    atomic_write_csv(cases[z_columns].reset_index(drop=True), z_path)
    atomic_write_csv(cases[["group_name"]].reset_index(drop=True), group_path)
    return z_path, group_path


def build_app(editor: FaceEditor, face_w: np.ndarray, label_store: LabelStore | None = None,
              images_dir: Path | None = None, cases: pd.DataFrame | None = None, selection_dir: Path | None = None):
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    state = {"w": np.asarray(face_w, np.float32)}

    def render(eyes, mouth, pose):
        return editor.render(state["w"], {"eyes": eyes, "mouth": mouth, "pose": pose})

    with gr.Blocks(analytics_enabled=False, title="Oh-LoRA face app") as app:
        with gr.Tab("Edit"):
            sliders = [gr.Slider(-3.0, 3.0, value=0.0, step=0.1, label=name, elem_id=name) for name in PROPERTIES]
            face = gr.Image(value=render(0.0, 0.0, 0.0), elem_id="face", format="png", interactive=False)
            reset = gr.Button("reset", elem_id="reset")
            for slider in sliders:
                # trigger_mode="always_last": while dragging only the newest value renders, no stale queue.
                slider.change(render, sliders, face, trigger_mode="always_last", show_progress="hidden")
            reset.click(lambda: (0.0, 0.0, 0.0), None, sliders)
        if cases is not None and selection_dir is not None:
            with gr.Tab("Select"):
                table = gr.Dataframe(cases.drop(columns=[c for c in cases.columns if str(c).startswith("z")]),
                                     elem_id="cases", interactive=False)
                chosen = gr.CheckboxGroup([str(c) for c in cases["case"]], label="final faces", elem_id="chosen")
                status = gr.Textbox(label="status", elem_id="select_status")

                def save_selection(picked):
                    picked_cases = cases[cases["case"].astype(str).isin(picked)]
                    z_path, _ = write_selection(picked_cases, selection_dir)
                    return f"wrote {len(picked_cases)} faces to {z_path.name}"

                gr.Button("save selection", elem_id="save_selection").click(save_selection, chosen, status)
        if label_store is not None and images_dir is not None:
            with gr.Tab("Label"):
                keys_help = ", ".join(f"{q}: " + "/".join(a) for q, a in label_store.schema.items())
                gr.Markdown(f"Keys - {keys_help}; Backspace goes back.")
                position = gr.State(label_store.first_unlabelled())
                answers = gr.State({})
                picture = gr.Image(elem_id="label_image", interactive=False)
                progress = gr.Textbox(elem_id="label_progress", label="progress")
                key_box = gr.Textbox(elem_id="label_key", label="type the answer keys here")

                def show(pos):
                    done = len(label_store.labelled())
                    total = len(label_store.image_names)
                    if pos >= total:
                        return None, f"{done}/{total} labelled - all done"
                    name = label_store.image_names[pos]
                    return load_image(images_dir / f"{name:06d}.png"), f"image {name}: {done}/{total} labelled"

                def on_key(text, pos, given):
                    questions = list(label_store.schema)
                    for char in text.lower():
                        if char == "<":
                            pos, given = max(0, pos - 1), {}
                            continue
                        if pos >= len(label_store.image_names):
                            break
                        question = questions[len(given)]
                        if char in label_store.schema[question]:
                            given = {**given, question: label_store.schema[question][char]}
                        if len(given) == len(questions):
                            label_store.save(label_store.image_names[pos], given)
                            pos, given = pos + 1, {}
                    return ("", pos, given, *show(pos))

                key_box.input(on_key, [key_box, position, answers], [key_box, position, answers, picture, progress])
                def resume():
                    # Every page load starts at the first unlabelled image, so a reload or restart resumes.
                    pos = label_store.first_unlabelled()
                    return (pos, {}, *show(pos))

                app.load(resume, None, [position, answers, picture, progress])
    return app
