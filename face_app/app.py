"""The Gradio Blocks app: Edit, Select and Label tabs, fully offline (loopback only, no analytics, no share link)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common import artifacts
from common.fileio import atomic_path, load_image
from face_app.cases import (RESULT_COLUMNS, FaceChoice, latent_columns, passed_mask, read_evaluated_cases,
                            read_selection, seeded_face, write_selection)
from face_app.editing import PROPERTIES, FaceEditor, next_free_stem, save_face
from face_app.idle import WORD_RANGES, IdleSettings, gif_bytes, idle_frames, weights_from_words
from face_app.labeling import BACK_KEY, FORWARD_KEY, LabelSession, LabelStore, apply_keys
from face_app.offline import set_offline_environment

set_offline_environment()  # before gradio is imported: no analytics, no hub calls
import gradio as gr  # noqa: E402

__all__ = ["build_app", "serve", "write_selection"]

NO_WORD = "-"
SLIDER_RANGE = 3.0
# Faces are shown scaled up smoothly (the browser's interpolation): a 64 px face enlarged pixel by pixel reads as
# blocks. Only the display is smoothed; saved PNGs keep the generator's own pixels.
CSS = ("#face img, #play img, #case_face img, #label_image img {image-rendering: auto; width: 100%; "
       "height: 100%; object-fit: contain;}")
# In the key box, left arrow (or Backspace) and right arrow press the back / forward buttons, so a
# person labels with the keyboard alone; opening the Label tab puts the cursor in the key box.
KEYS_JS = """
() => {
  const box = () => document.querySelector('#label_key textarea, #label_key input');
  document.addEventListener('keydown', (event) => {
    const target = box();
    if (!target || document.activeElement !== target) return;
    let button = null;
    if (event.key === 'ArrowLeft' || event.key === 'Backspace') button = '#label_back';
    if (event.key === 'ArrowRight') button = '#label_forward';
    if (button === null) return;
    event.preventDefault();
    document.querySelector(button).click();
  }, true);
  document.addEventListener('click', (event) => {
    const tab = event.target.closest('button[role=tab]');
    if (tab && tab.textContent.includes('Label')) setTimeout(() => box() && box().focus(), 200);
  });
}
"""


class FaceBook:
    """Faces by menu name, their w computed once (the slider path then only runs the synthesis)."""

    def __init__(self, editor: FaceEditor, faces: list[FaceChoice]):
        self.editor = editor
        self.faces = {face.name: face for face in faces}
        self._w: dict[str, np.ndarray] = {}

    def names(self) -> list[str]:
        return list(self.faces)

    def w(self, name: str) -> np.ndarray:
        if name not in self._w:
            self._w[name] = self.editor.w_from_latent(self.faces[name].latent)
        return self._w[name]

    def add_seeded(self) -> str:
        taken = {f.seed for f in self.faces.values() if f.seed is not None}
        seed = max(taken, default=-1) + 1
        latent_dim = self.editor.generator.z_space_dim + self.editor.label_size
        face = seeded_face(seed, latent_dim)
        self.faces[face.name] = face
        return face.name


def layer_range(first: float, last: float, num_layers: int) -> tuple[int, int] | None:
    low, high = sorted((int(first), int(last)))
    return None if (low, high) == (0, num_layers - 1) else (low, high)


def build_app(editor: FaceEditor, faces: list[FaceChoice] | np.ndarray, store: LabelStore | None = None,
              vectorfind_dir: Path | None = None, saved_dir: Path | None = None, play_seconds: float = 12.0,
              play_fps: float = 10.0, notes: dict[str, str] | None = None, queue_renders: bool = False,
              edit_layers: tuple[int, int] | None = None):
    """queue_renders=False sends slider renders as plain requests instead of through Gradio's queue (join +
    event stream): one round trip less per frame; always_last still keeps one render in flight per page."""
    if isinstance(faces, np.ndarray):  # a bare w: the one face to edit
        faces = [FaceChoice("face", faces, None)]
        book = FaceBook(editor, faces)
        book._w["face"] = np.asarray(faces[0].latent, np.float32)
    else:
        book = FaceBook(editor, faces)
    saved_dir = Path(saved_dir) if saved_dir is not None else Path(artifacts.FACE_APP_SAVED).resolve()
    num_layers = editor.num_layers
    # the layer sliders start (and reset) at the range VectorFind edits and evaluates; None = all layers
    first_layer0, last_layer0 = edit_layers if edit_layers is not None else (0, num_layers - 1)
    kinds = editor.kinds() or ["chosen"]
    all_groups = editor.groups(kinds[0])

    def default_group(name: str) -> str | None:
        group = book.faces[name].group
        return group if group in all_groups else (all_groups[0] if all_groups else None)

    def render(name, eyes, mouth, pose, first, last, kind, group):
        weights = {"eyes": eyes, "mouth": mouth, "pose": pose}
        return editor.render(book.w(name), weights, layer_range(first, last, num_layers),
                             editor.directions_for(kind, group))

    first_face = book.names()[0]
    with gr.Blocks(analytics_enabled=False, title="Oh-LoRA face app") as app:
        with gr.Tab("Edit"):
            with gr.Row():
                with gr.Column(scale=2):
                    with gr.Row():
                        face_menu = gr.Dropdown(book.names(), value=first_face, label="face", elem_id="face_choice")
                        random_face = gr.Button("random face", elem_id="random_face")
                    sliders = [gr.Slider(-SLIDER_RANGE, SLIDER_RANGE, value=0.0, step=0.1, label=name, elem_id=name)
                               for name in PROPERTIES]
                    with gr.Accordion("directions and layers", open=False):
                        kind = gr.Radio(kinds, value=kinds[0], label="directions", elem_id="direction_kind",
                                        interactive=len(kinds) > 1)
                        group = gr.Dropdown(all_groups, value=default_group(first_face), label="direction group",
                                            elem_id="direction_group", interactive=bool(all_groups))
                        first = gr.Slider(0, num_layers - 1, value=first_layer0, step=1, label="first edited layer",
                                          elem_id="layer_first")
                        last = gr.Slider(0, num_layers - 1, value=last_layer0, step=1, label="last edited layer",
                                         elem_id="layer_last")
                    with gr.Row():
                        reset = gr.Button("reset", elem_id="reset")
                        save = gr.Button("save", elem_id="save")
                        play = gr.Button("play", elem_id="play_button")
                    with gr.Accordion("play: dialogue words and seed", open=False):
                        words = [gr.Dropdown([NO_WORD, *WORD_RANGES[p]], value=NO_WORD, label=f"{p} word",
                                             elem_id=f"{p}_word") for p in PROPERTIES]
                        play_seed = gr.Number(0, precision=0, label="play seed", elem_id="play_seed")
                    status = gr.Markdown(edit_notes(editor, notes), elem_id="edit_status")
                with gr.Column(scale=1):
                    face = gr.Image(value=render(first_face, 0.0, 0.0, 0.0, 0, num_layers - 1, kinds[0],
                                                 default_group(first_face)),
                                    elem_id="face", format="png", interactive=False, label="face",
                                    height=288, buttons=[])
                    played = gr.Image(elem_id="play", interactive=False, label="play (idle animation)", height=288,
                                      buttons=["download"])
            render_inputs = [face_menu, *sliders, first, last, kind, group]
            for control in (*sliders, first, last, kind, group):
                # always_last: while a slider is dragged only the newest value is rendered, no stale queue.
                control.change(render, render_inputs, face, trigger_mode="always_last", show_progress="hidden",
                               queue=queue_renders, concurrency_limit=1)
            face_menu.change(lambda name: default_group(name), face_menu, group, show_progress="hidden").then(
                render, render_inputs, face, show_progress="hidden")

            def on_random_face():
                name = book.add_seeded()
                return gr.update(choices=book.names(), value=name)

            random_face.click(on_random_face, None, face_menu)
            reset.click(lambda: (0.0, 0.0, 0.0, first_layer0, last_layer0), None, [*sliders, first, last])

            def on_save(name, eyes, mouth, pose, first_layer, last_layer, kind_name, group_name):
                weights = {"eyes": eyes, "mouth": mouth, "pose": pose}
                layers = layer_range(first_layer, last_layer, num_layers)
                chosen = book.faces[name]
                image = render(name, eyes, mouth, pose, first_layer, last_layer, kind_name, group_name)
                path = save_face(saved_dir, image, chosen.latent, book.w(name), weights, {
                    "face": name, "case": chosen.case, "seed": chosen.seed, "group": group_name,
                    "directions": kind_name, "layers": layers, **(notes or {})})
                return f"saved {path} (+ {path.with_suffix('.json').name}: latent, w, weights)"

            save.click(on_save, render_inputs, status)

            # The animation starts from the original's idle weights, not from the sliders (as the original did).
            def on_play(name, eyes, mouth, pose, first_layer, last_layer, kind_name, group_name, seed, *word_values):
                chosen_words = {p: (None if v == NO_WORD else v) for p, v in zip(PROPERTIES, word_values)}
                seed = int(seed or 0)
                answer = weights_from_words(chosen_words, np.random.default_rng([seed, 1]))
                frames, blinks = idle_frames(IdleSettings(play_fps, play_seconds, seed), answer=answer)
                images = editor.render_frames(book.w(name), frames, layer_range(first_layer, last_layer, num_layers),
                                              editor.directions_for(kind_name, group_name))
                saved_dir.mkdir(parents=True, exist_ok=True)
                path = saved_dir / f"{next_free_stem(saved_dir, 'play')}.gif"
                with atomic_path(path) as tmp:
                    tmp.write_bytes(gif_bytes(images, play_fps, scale=2))
                told = ", ".join(f"{p} {w:+.2f}" for p, w in answer.items()) or "no words"
                return str(path), (f"played {len(frames)} frames at {play_fps:g} fps (seed {seed}, {told}, "
                                   f"{blinks} blink(s)) -> {path}")

            play.click(on_play, [*render_inputs, play_seed, *words], [played, status], concurrency_limit=1)

        if vectorfind_dir is not None:
            build_select_tab(editor, book, Path(vectorfind_dir))
        if store is not None:
            build_label_tab(app, store)
    app.face_app_saved_dir = saved_dir
    return app


def edit_notes(editor: FaceEditor, notes: dict[str, str] | None) -> str:
    lines = [f"{k}: `{v}`" for k, v in (notes or {}).items()]
    if not editor.kinds():
        lines.append("no direction files yet (run run_vectorfind.py): the sliders do not change the face")
    return "  \n".join(lines)


def build_select_tab(editor: FaceEditor, book: FaceBook, vectorfind_dir: Path) -> None:
    cases = read_evaluated_cases(vectorfind_dir)
    with gr.Tab("Select"):
        if cases.empty:
            gr.Markdown(f"No evaluated cases in `{vectorfind_dir / artifacts.EVALUATION_DIR}` yet: "
                        f"run run_vectorfind.py (its evaluation writes test_result.csv).")
            return
        chosen_cases = {face.case for face in read_selection(vectorfind_dir)}
        shown = cases[[c for c in RESULT_COLUMNS if c in cases.columns]].copy()
        shown.insert(0, "chosen", shown["case"].astype(int).isin(chosen_cases))
        shown["passed"] = np.where(passed_mask(cases), "O", "X")
        for column in ("eyes_corr", "mouth_corr", "pose_corr", "sum_abs_corr"):
            shown[column] = shown[column].astype(float).round(3)
        types = ["bool"] + ["number" if pd.api.types.is_numeric_dtype(shown[c]) else "str" for c in shown.columns[1:]]
        gr.Markdown("Tick the final faces (click a header to sort; click a row to see its face). Every tick "
                    f"rewrites `{vectorfind_dir.name}/ohlora_z_vectors.csv` and `ohlora_w_group_names.csv`.")
        with gr.Row():
            table = gr.Dataframe(shown, datatype=types, interactive=True, static_columns=list(range(1, len(types))),
                                 elem_id="cases", max_height=600, scale=3)
            case_face = gr.Image(elem_id="case_face", format="png", interactive=False, label="case", height=256, scale=1,
                                 buttons=[])
        status = gr.Markdown(f"{len(chosen_cases)} faces chosen", elem_id="select_status")
        by_case = cases.set_index(cases["case"].astype(int))

        def on_tick(table_value: pd.DataFrame):
            if not {"chosen", "case"} <= set(table_value.columns):
                return "the chosen / case columns were removed from the table: reload the page"
            ticked = table_value.loc[table_value["chosen"].astype(str).str.lower().isin(["true", "1"]), "case"]
            picked = by_case.loc[sorted(int(c) for c in ticked)]
            z_path, group_path = write_selection(picked, vectorfind_dir)
            return f"{len(picked)} faces chosen -> `{z_path}`, `{group_path.name}`"

        table.input(on_tick, table, status, concurrency_limit=1)
        if latent_columns(cases):
            def on_row(evt: gr.SelectData):
                row = evt.row_value
                if not row:
                    return None
                case = int(row[1])
                latent = by_case.loc[case, latent_columns(cases)].to_numpy(np.float32)
                return editor.render(editor.w_from_latent(latent), {})

            table.select(on_row, None, case_face, show_progress="hidden")


def build_label_tab(app, store: LabelStore) -> None:
    with gr.Tab("Label"):
        keys_help = "; ".join(f"{q}: " + " / ".join(f"`{k}` {'yes' if v else 'no'}" if q in ('age', 'glass')
                                                     else f"`{k}`" for k, v in a.items())
                              for q, a in store.schema.items())
        gr.Markdown(f"Type into the key box - {keys_help}. One key per answer, in this order; the row is saved "
                    f"as soon as the last answer is typed. Left arrow (or Backspace) goes back, right arrow "
                    f"skips forward. Images: {len(store.image_names)}; labels go to `{store.csv_path}`.")
        # The key box only grows (the server never clears it, which could drop keys typed meanwhile);
        # `consumed` counts the keys already applied.
        session = gr.State({"position": store.first_unlabelled(), "given": {}, "consumed": 0})
        with gr.Row():
            picture = gr.Image(elem_id="label_image", format="png", interactive=False, height=320, label="image", buttons=[])
            with gr.Column():
                progress = gr.Textbox(elem_id="label_progress", label="progress", interactive=False)
                key_box = gr.Textbox(elem_id="label_key", label="keys", placeholder="type the answer keys here")
                with gr.Row():
                    back = gr.Button("back", elem_id="label_back", size="sm")
                    forward = gr.Button("forward", elem_id="label_forward", size="sm")

        def show(state: dict):
            answers = store.answers()
            total, position = len(store.image_names), state["position"]
            if total == 0:
                return None, (f"no numbered images in {store.images_dir or 'the images folder'}: generate them "
                              f"first or choose another folder (--images-dir)")
            done = sum(1 for name in store.image_names if name in answers)
            if position >= total:
                return None, f"{done}/{total} labelled - end of the folder (left arrow goes back)"
            name = store.image_names[position]
            given = state["given"]
            known = answers.get(name)
            line = f"image {name} ({position + 1}/{total}): {done}/{total} labelled"
            if known:
                line += " - has " + ", ".join(f"{q} {v}" for q, v in known.items())
            if given:
                line += " - typed " + ", ".join(f"{q} {v}" for q, v in given.items())
            return load_image(store.image_path(name)), line

        def on_key(text, state):
            text = text or ""
            fresh = text[state["consumed"]:] if len(text) >= state["consumed"] else text
            result = apply_keys(store, LabelSession(state["position"], state["given"]), fresh)
            new_state = {"position": result.position, "given": result.given, "consumed": len(text)}
            return (new_state, *show(new_state))

        key_box.input(on_key, [key_box, session], [session, picture, progress], show_progress="hidden",
                      trigger_mode="always_last", concurrency_limit=1)

        def on_move(step_key):
            def move(state):
                result = apply_keys(store, LabelSession(state["position"], state["given"]), step_key)
                new_state = {**state, "position": result.position, "given": result.given}
                return (new_state, *show(new_state))
            return move

        for button, step_key in ((back, BACK_KEY), (forward, FORWARD_KEY)):
            button.click(on_move(step_key), session, [session, picture, progress], show_progress="hidden",
                         concurrency_limit=1)

        def resume():
            # Every page load starts at the first unlabelled image, so a reload or restart resumes.
            state = {"position": store.first_unlabelled(), "given": {}, "consumed": 0}
            return (state, *show(state), "")

        app.load(resume, None, [session, picture, progress, key_box])


def serve(app, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Launch on host:port with no share link; the save/play folder is the only extra path it may serve."""
    saved_dir = getattr(app, "face_app_saved_dir", None)
    return app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                      allowed_paths=[str(saved_dir)] if saved_dir is not None else None, css=CSS, js=KEYS_JS,
                      show_error=True, quiet=True)
