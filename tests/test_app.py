"""Face app: the edit, case, idle and label functions without a UI, then all three tabs in headless Chromium."""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from common.errors import PipelineError
from common.fileio import save_image
from common.images import to_uint8
from face_app.browser import BROWSER_MISSING, browser_available, chromium_driver, free_port, open_tab, wait_for
from face_app.cases import (face_choices, read_evaluated_cases, read_selection, write_selection, RESULT_COLUMNS)
from face_app.editing import FaceEditor, read_direction_sets, save_face
from face_app.idle import (IDLE_BASE, WALK_LIMIT, IdleSettings, gif_bytes, idle_frames, transition_values,
                           weights_from_words)
from face_app.labeling import STAGE2_SCHEMA, V8_SCHEMA, LabelSession, LabelStore, apply_keys
from stylegan.generate import batch_invariant
from stylegan.stylegan_generator import StyleGANGenerator
from vectorfind.directions import GROUP_NAMES, direction_path, save_direction

W_DIM = 512  # the direction files' width (vectorfind.directions.W_DIM)


def tiny_generator(seed: int = 0, label_size: int = 0) -> StyleGANGenerator:
    torch.manual_seed(seed)
    return StyleGANGenerator(resolution=8, z_space_dim=16, w_space_dim=W_DIM, label_size=label_size,
                             mapping_layers=2, mapping_fmaps=16, fmaps_base=64, fmaps_max=16).eval()


def write_directions(folder: Path, seed: int, groups=(GROUP_NAMES[0], GROUP_NAMES[5])) -> None:
    rng = np.random.default_rng(seed)
    for group in groups:
        for prop in ("eyes", "mouth", "pose"):
            vector = rng.standard_normal(W_DIM).astype(np.float32)
            save_direction(direction_path(folder, prop, group), vector / np.linalg.norm(vector) * 8.0)


def tiny_editor(tmp_path: Path, seed: int = 0, label_size: int = 0) -> FaceEditor:
    write_directions(tmp_path / "plain", seed)
    write_directions(tmp_path / "conditional", seed + 1, groups=(GROUP_NAMES[0],))
    sets = read_direction_sets({"chosen": tmp_path / "plain", "conditional": tmp_path / "conditional",
                                "plain": tmp_path / "absent"})
    assert list(sets) == ["chosen", "conditional"] and list(sets["conditional"]) == [GROUP_NAMES[0]]
    return FaceEditor(tiny_generator(seed, label_size), direction_sets=sets, label_size=label_size)


def write_report(vectorfind_dir: Path, latent_dim: int, num_cases: int = 5) -> pd.DataFrame:
    """An evaluation report in the original's columns: cases 0..n-1, even cases passed."""
    rng = np.random.default_rng(7)
    report = vectorfind_dir / "image_generation_report"
    report.mkdir(parents=True)
    corr = rng.uniform(-1, -0.7, (num_cases, 3))
    results = pd.DataFrame({"case": range(num_cases), "vector_no": 0,
                            "passed": ["O" if i % 2 == 0 else "X" for i in range(num_cases)],
                            "group_name": [GROUP_NAMES[5 if i % 2 else 0] for i in range(num_cases)],
                            "eyes_corr": corr[:, 0], "mouth_corr": corr[:, 1], "pose_corr": corr[:, 2],
                            "sum_abs_corr": np.abs(corr).sum(1)})
    results.to_csv(report / "test_result.csv", index=False)
    pd.DataFrame(rng.standard_normal((num_cases, latent_dim)).round(4)).to_csv(report / "latent_codes_all.csv",
                                                                               index=False)
    return results


# --- without the UI --------------------------------------------------------------------------------

def test_render_is_the_edited_synthesis_and_matches_the_padded_batch(tmp_path):
    editor = tiny_editor(tmp_path)
    w = editor.w_from_latent(np.random.default_rng(0).standard_normal(16).astype(np.float32))
    directions = editor.directions_for("chosen", GROUP_NAMES[0])
    with torch.inference_mode():
        wp = torch.from_numpy(w + 1.5 * directions["eyes"]).view(1, 1, -1).repeat(1, editor.num_layers, 1)
        expected = to_uint8(editor.generator.synthesis(wp))[0]
        padded = to_uint8(batch_invariant(editor.generator.synthesis, wp))[0]
    moved = editor.render(w, {"eyes": 1.5, "mouth": 0.0, "pose": 0.0}, directions=directions)
    assert np.array_equal(moved, expected)
    assert np.abs(moved.astype(int) - padded).max() <= 1  # batch 1 vs the generation stage's padded batch
    plain = editor.render(w, {}, directions=directions)
    assert not np.array_equal(plain, moved)
    other_group = editor.render(w, {"eyes": 1.5}, directions=editor.directions_for("chosen", GROUP_NAMES[5]))
    assert not np.array_equal(other_group, moved)
    first_layers = editor.render(w, {"eyes": 1.5}, layers=(0, 1), directions=directions)
    assert not np.array_equal(first_layers, moved) and not np.array_equal(first_layers, plain)
    frames = editor.render_frames(w, [{"eyes": 1.5}, {}], directions=directions, batch_size=1)
    assert np.array_equal(frames[0], moved) and np.array_equal(frames[1], plain)


def test_latent_with_label_dims_and_missing_directions(tmp_path):
    editor = tiny_editor(tmp_path, label_size=7)
    latent = np.random.default_rng(1).standard_normal(16 + 7).astype(np.float32)
    w = editor.w_from_latent(latent)
    with torch.inference_mode():
        z, label = torch.from_numpy(latent[:16]).view(1, -1), torch.from_numpy(latent[16:]).view(1, -1)
        expected = editor.generator.mapping(z.repeat(4, 1), label.repeat(4, 1))[0].numpy()
    assert np.array_equal(w, expected)
    with pytest.raises(PipelineError, match="23 values"):
        editor.w_from_latent(latent[:16])
    bare = FaceEditor(tiny_generator(), direction_sets={})
    assert bare.kinds() == [] and bare.directions_for("chosen", "hhhh") == {}
    face = bare.render(w, {"eyes": 2.0})  # no direction files yet: the plain face, not an error
    assert face.shape == (8, 8, 3)


def test_save_face_writes_png_and_its_latent_and_weights(tmp_path):
    editor = tiny_editor(tmp_path)
    latent = np.random.default_rng(2).standard_normal(16).astype(np.float32)
    w = editor.w_from_latent(latent)
    image = editor.render(w, {"mouth": 1.0})
    first = save_face(tmp_path / "saved", image, latent, w, {"mouth": 1.0}, {"face": "seed 2"})
    second = save_face(tmp_path / "saved", image, latent, w, {"mouth": 1.0}, {"face": "seed 2"})
    assert (first.name, second.name) == ("face_0000.png", "face_0001.png")
    record = json.loads(first.with_suffix(".json").read_text())
    assert record["weights"] == {"eyes": 0.0, "mouth": 1.0, "pose": 0.0} and record["face"] == "seed 2"
    assert np.allclose(record["latent"], latent) and np.allclose(record["w"], w)
    assert np.array_equal(np.asarray(Image.open(first).convert("RGB")), image)


def test_cases_reader_tolerates_missing_files_and_selection_round_trips(tmp_path):
    assert read_evaluated_cases(tmp_path / "nothing").empty
    faces, source = face_choices(tmp_path / "nothing", 16, seed=3)
    assert [f.name for f in faces] == ["seed 3", "seed 4", "seed 5", "seed 6"] and source.startswith("seeds")
    results = write_report(tmp_path, 16)
    cases = read_evaluated_cases(tmp_path)
    assert cases["case"].tolist() == list(range(5)) and [str(i) for i in range(16)] == list(cases.columns[-16:])
    faces, source = face_choices(tmp_path, 16, seed=0)
    assert [f.case for f in faces] == [0, 2, 4] and "passed" in source
    latents = pd.read_csv(tmp_path / "image_generation_report/latent_codes_all.csv").to_numpy(np.float32)
    assert np.allclose(faces[1].latent, latents[2]) and faces[1].group == GROUP_NAMES[0]
    write_selection(cases[cases["case"].isin([4, 1])], tmp_path)
    z_frame = pd.read_csv(tmp_path / "ohlora_z_vectors.csv")
    groups = pd.read_csv(tmp_path / "ohlora_w_group_names.csv")
    assert list(z_frame.columns) == [str(i) for i in range(16)] and np.allclose(z_frame.to_numpy(), latents[[1, 4]])
    assert list(groups.columns) == list(RESULT_COLUMNS) and groups["case"].tolist() == [1, 4]
    assert groups.loc[1, "passed"] == "O" and np.isclose(groups.loc[0, "eyes_corr"], results.loc[1, "eyes_corr"])
    chosen, source = face_choices(tmp_path, 16, seed=0)  # the selection now comes first
    assert [f.case for f in chosen] == [1, 4] and source.endswith("ohlora_z_vectors.csv")
    assert [f.group for f in read_selection(tmp_path)] == [GROUP_NAMES[5], GROUP_NAMES[0]]
    (tmp_path / "image_generation_report/latent_codes_all.csv").write_text("0,1\n0.5,0.5\n")
    with pytest.raises(PipelineError, match="different runs"):
        read_evaluated_cases(tmp_path)


def test_idle_frames_random_walk_fifo_blinks_and_fixed_pose_word():
    frames, blinks = idle_frames(IdleSettings(fps=10, seconds=30, seed=4))
    assert len(frames) == 300 and blinks >= 1
    assert all(abs(f["mouth"] - IDLE_BASE["mouth"]) <= WALK_LIMIT["mouth"] + 1e-9 for f in frames)
    assert all(abs(f["eyes"] - IDLE_BASE["eyes"]) <= WALK_LIMIT["eyes"] + 1e-9 for f in frames[:50])  # no blink < 5 s
    closed = [i for i, f in enumerate(frames) if f["eyes"] < IDLE_BASE["eyes"] - WALK_LIMIT["eyes"] - 1e-9]
    assert closed and closed[0] >= 50
    # First in, first out: a blink's values come in their queued order (rising, then falling back).
    run = [frames[i]["eyes"] for i in range(closed[0], closed[0] + 3)]
    assert run[0] > run[1] >= run[2]
    assert frames == idle_frames(IdleSettings(fps=10, seconds=30, seed=4))[0]  # seeded
    answer = {"pose": 1.2}
    eased, _ = idle_frames(IdleSettings(fps=10, seconds=8, seed=0), answer=answer)
    pose = [f["pose"] for f in eased[:70]]
    assert pose == transition_values(IDLE_BASE["pose"], 1.2) and max(pose) == pytest.approx(1.2)
    rng = np.random.default_rng(0)
    for _ in range(50):  # the original read the mouth word here; "normal" pose must land in the pose range
        weights = weights_from_words({"pose": "normal", "mouth": "very big"}, rng)
        assert 0.8 <= weights["pose"] < 1.5 and 1.4 <= weights["mouth"] < 1.6 and "eyes" not in weights
    gif = Image.open(io.BytesIO(gif_bytes(np.arange(5, dtype=np.uint8).repeat(192).reshape(5, 8, 8, 3) * 40, fps=10, scale=2)))
    assert gif.n_frames == 5 and gif.size == (16, 16)
    edge = np.zeros((1, 8, 8, 3), np.uint8)
    edge[:, :, 4:] = 200
    big = np.asarray(Image.open(io.BytesIO(gif_bytes(edge, fps=10, scale=4))).convert("RGB"))
    assert len(np.unique(big[..., 0])) > 2  # scaled up smoothly: grey levels between the two halves, not blocks


def test_label_store_resumes_keeps_other_rows_and_keys_move(tmp_path):
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"img_name": [0, 5, 2], "quality": [1, 0, 1], "gender": [0, 1, 1],
                  "label_source": ["hand", "hand", "annotator"]}).to_csv(csv, index=False)
    store = LabelStore(csv, [0, 1, 2, 5], STAGE2_SCHEMA)
    assert store.first_unlabelled() == 1 and store.labelled() == {0, 5}  # annotator rows may be replaced
    session = apply_keys(store, LabelSession(1), "fxg")  # x: not an answer key, ignored
    assert session == LabelSession(2, {})
    frame = pd.read_csv(csv).set_index("img_name")
    assert frame.index.tolist() == [0, 1, 2, 5]
    assert (frame.loc[1, "gender"], frame.loc[1, "quality"], frame.loc[1, "label_source"]) == (1, 1, "hand")
    assert frame.loc[2, "label_source"] == "annotator" and frame.loc[5, "label_source"] == "hand"
    assert apply_keys(store, session, "<<<") == LabelSession(0, {})
    assert apply_keys(store, LabelSession(3), ">>>") == LabelSession(4, {})
    assert apply_keys(store, LabelSession(2), "m<") == LabelSession(1, {})  # back drops a half-typed answer
    assert store.first_unlabelled() == 2
    v8 = LabelStore(tmp_path / "v8.csv", [7], V8_SCHEMA)
    apply_keys(v8, LabelSession(0), "mbos")
    row = pd.read_csv(tmp_path / "v8.csv").iloc[0]
    assert (row["img_name"], row["gender"], row["quality"], row["age"], row["glass"]) == (7, 0, 0, 1, 1)
    with pytest.raises(PipelineError, match="schema"):
        LabelStore(csv, [0], V8_SCHEMA).labelled()


# --- in the browser --------------------------------------------------------------------------------

class NetworkRecorder:
    """Records socket connects / name lookups to non-loopback hosts while switched on (audit hooks stay
    installed for the process, so the hook only looks while `on`)."""

    def __init__(self):
        self.on, self.outbound = False, []
        sys.addaudithook(self.hook)

    @staticmethod
    def loopback(host) -> bool:
        if host in ("localhost", "", None):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def hook(self, event, args):
        if not self.on:
            return
        if event == "socket.connect" and isinstance(args[1], tuple) and not self.loopback(args[1][0]):
            self.outbound.append(("connect", args[1]))
        elif event == "socket.getaddrinfo" and not self.loopback(args[0]):
            self.outbound.append(("getaddrinfo", args[0]))


NETWORK = NetworkRecorder()


@pytest.fixture(scope="module")
def running_app(tmp_path_factory):
    if not browser_available():
        pytest.skip(BROWSER_MISSING)
    from face_app.app import build_app, serve

    NETWORK.on = True
    root = tmp_path_factory.mktemp("app")
    images = root / "images"
    images.mkdir()
    for i in range(4):
        save_image(np.full((8, 8, 3), 40 * i, np.uint8), images / f"{i:06d}.png")
    store = LabelStore.for_folder(root / "labels.csv", images, STAGE2_SCHEMA)
    editor = tiny_editor(root)
    vectorfind_dir = root / "vectorfind"
    write_report(vectorfind_dir, 16)
    faces, _ = face_choices(vectorfind_dir, 16, seed=0)
    app = build_app(editor, faces, store=store, vectorfind_dir=vectorfind_dir, saved_dir=root / "saved",
                    play_seconds=1.0, play_fps=10.0)
    port = free_port()
    serve(app, "127.0.0.1", port, block=False)
    driver = chromium_driver(network_log=True)
    yield {"url": f"http://127.0.0.1:{port}", "driver": driver, "editor": editor, "faces": faces, "store": store,
           "root": root, "vectorfind_dir": vectorfind_dir}
    driver.quit()
    app.close()
    NETWORK.on = False


def image_pixels(driver, elem_id: str) -> np.ndarray | None:
    src = driver.execute_script(f"const i = document.querySelector('#{elem_id} img'); return i ? i.src : null")
    if not src:
        return None
    try:
        data = base64.b64decode(src.split(",", 1)[1]) if src.startswith("data:") else urllib.request.urlopen(src).read()
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except (OSError, ValueError):  # the page may still be switching images: the caller waits and asks again
        return None


def field_value(driver, elem_id: str) -> str:
    return driver.execute_script(
        f"const e = document.querySelector('#{elem_id} textarea, #{elem_id} input'); return e ? e.value : ''")


def visible(driver, selector: str):
    return wait_for(lambda: [e for e in driver.find_elements("css selector", selector) if e.is_displayed()])[0]


def test_slider_move_changes_face_to_the_generated_image(running_app):
    from selenium.webdriver.common.keys import Keys

    driver, editor, face = running_app["driver"], running_app["editor"], running_app["faces"][0]
    driver.get(running_app["url"])
    wait_for(lambda: image_pixels(driver, "face") is not None)
    w = editor.w_from_latent(face.latent)
    directions = editor.directions_for("chosen", face.group)
    assert np.array_equal(image_pixels(driver, "face"), editor.render(w, {}, directions=directions))
    slider = driver.find_element("css selector", "#eyes input[type=range]")
    slider.send_keys(*[Keys.ARROW_RIGHT] * 5)
    expected = editor.render(w, {"eyes": 0.5}, directions=directions)
    wait_for(lambda: np.array_equal(image_pixels(driver, "face"), expected))
    visible(driver, "#reset").click()
    wait_for(lambda: np.array_equal(image_pixels(driver, "face"), editor.render(w, {}, directions=directions)))


def test_direction_kind_and_random_face(running_app):
    from selenium.webdriver.common.keys import Keys

    from face_app.cases import seeded_face

    driver, editor, face = running_app["driver"], running_app["editor"], running_app["faces"][0]
    driver.get(running_app["url"])
    wait_for(lambda: image_pixels(driver, "face") is not None)
    driver.find_element("css selector", "#mouth input[type=range]").send_keys(*[Keys.ARROW_LEFT] * 4)
    w = editor.w_from_latent(face.latent)
    chosen = editor.render(w, {"mouth": -0.4}, directions=editor.directions_for("chosen", face.group))
    wait_for(lambda: np.array_equal(image_pixels(driver, "face"), chosen))
    driver.find_element("xpath", "//*[normalize-space()='directions and layers']").click()
    visible(driver, "#direction_kind").find_element("xpath", ".//label[contains(., 'conditional')]").click()
    conditional = editor.render(w, {"mouth": -0.4}, directions=editor.directions_for("conditional", face.group))
    assert not np.array_equal(conditional, chosen)
    wait_for(lambda: np.array_equal(image_pixels(driver, "face"), conditional))
    visible(driver, "#random_face").click()
    seeded = seeded_face(0, 16)
    expected = editor.render(editor.w_from_latent(seeded.latent), {"mouth": -0.4},
                             directions=editor.directions_for("conditional", GROUP_NAMES[0]))
    wait_for(lambda: np.array_equal(image_pixels(driver, "face"), expected))
    assert "seed 0" in driver.find_element("css selector", "#face_choice").text or \
        field_value(driver, "face_choice") == "seed 0"


def test_save_and_play_write_files(running_app):
    driver, saved = running_app["driver"], running_app["root"] / "saved"
    driver.get(running_app["url"])
    wait_for(lambda: image_pixels(driver, "face") is not None)
    visible(driver, "#save").click()
    record = wait_for(lambda: sorted(saved.glob("face_*.json")))[-1]
    details = json.loads(record.read_text())
    assert details["face"] == running_app["faces"][0].name and details["weights"]["eyes"] == 0.0
    visible(driver, "#play_button").click()
    gif = wait_for(lambda: sorted(saved.glob("play_*.gif")))[-1]
    assert Image.open(gif).n_frames == 10  # 1 s at 10 fps
    wait_for(lambda: image_pixels(driver, "play") is not None)


def test_select_tab_ticks_write_the_selection(running_app):
    driver, vectorfind_dir = running_app["driver"], running_app["vectorfind_dir"]
    driver.get(running_app["url"])
    open_tab(driver, "Select")
    visible(driver, "#cases input[type=checkbox]")
    boxes = driver.execute_script(  # the first checkbox, in the header, toggles all
        "return Array.from(document.querySelectorAll('#cases input[type=checkbox]')).filter(b => !b.closest('thead'))")
    assert len(boxes) == 5
    boxes[3].click()
    groups_csv = vectorfind_dir / "ohlora_w_group_names.csv"
    wait_for(lambda: groups_csv.is_file() and pd.read_csv(groups_csv)["case"].tolist() == [3])
    boxes[1].click()
    wait_for(lambda: pd.read_csv(groups_csv)["case"].tolist() == [1, 3])
    latents = pd.read_csv(vectorfind_dir / "image_generation_report/latent_codes_all.csv").to_numpy()
    assert np.allclose(pd.read_csv(vectorfind_dir / "ohlora_z_vectors.csv").to_numpy(), latents[[1, 3]])
    assert "2 faces chosen" in driver.find_element("css selector", "#select_status").text
    editor = running_app["editor"]
    driver.find_element("css selector", "#cases [data-testid='cell-2-1']").click()  # row of case 2: its face
    expected = editor.render(editor.w_from_latent(latents[2].astype(np.float32)), {})
    wait_for(lambda: np.array_equal(image_pixels(driver, "case_face"), expected))
    # Sorted by sum_abs_corr (ascending), the first row is the worst case, and ticking it picks that case.
    worst = int(pd.read_csv(vectorfind_dir / "image_generation_report/test_result.csv")
                .sort_values("sum_abs_corr")["case"].iloc[0])
    assert worst not in (1, 3)
    driver.execute_script("document.querySelectorAll('#cases thead [aria-label=\"Open cell menu\"]')[8].click()")
    visible(driver, "button").find_element("xpath", "//button[normalize-space()='Sort ascending']").click()
    first_row = "#cases .virtual-row[data-index='0']"  # rows are placed in display order (cell ids keep data order)
    wait_for(lambda: driver.find_element("css selector", first_row).text.split()[0] == str(worst))
    driver.find_element("css selector", f"{first_row} input[type=checkbox]").click()
    wait_for(lambda: pd.read_csv(groups_csv)["case"].tolist() == sorted({1, 3, worst}))


def test_label_keys_write_rows_arrows_go_back_and_reload_resumes(running_app):
    from selenium.webdriver.common.keys import Keys

    driver, store = running_app["driver"], running_app["store"]
    driver.get(running_app["url"])
    open_tab(driver, "Label")
    box = visible(driver, "#label_key textarea, #label_key input")
    box.send_keys("fgmb")
    wait_for(lambda: store.csv_path.is_file() and len(pd.read_csv(store.csv_path)) == 2)
    frame = pd.read_csv(store.csv_path).set_index("img_name")
    assert frame.loc[0, ["gender", "quality"]].tolist() == [1, 1]
    assert frame.loc[1, ["gender", "quality"]].tolist() == [0, 0]
    wait_for(lambda: field_value(driver, "label_progress").startswith("image 2 "))
    box.send_keys(Keys.ARROW_LEFT)
    wait_for(lambda: field_value(driver, "label_progress").startswith("image 1 "))
    box.send_keys("fg")  # relabel image 1, then on to image 2
    wait_for(lambda: pd.read_csv(store.csv_path).set_index("img_name").loc[1, ["gender", "quality"]].tolist() == [1, 1])
    wait_for(lambda: field_value(driver, "label_progress").startswith("image 2 "))
    box.send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: field_value(driver, "label_progress").startswith("image 3 "))
    driver.refresh()
    open_tab(driver, "Label")
    wait_for(lambda: field_value(driver, "label_progress").startswith("image 2 "))


def test_no_outbound_requests_from_server_or_page(running_app):
    driver = running_app["driver"]
    driver.get_log("performance")  # drop earlier entries
    driver.get(running_app["url"])
    wait_for(lambda: image_pixels(driver, "face") is not None)
    for tab in ("Select", "Label", "Edit"):
        open_tab(driver, tab)
    time.sleep(0.5)
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert urls and any(u.startswith(running_app["url"]) for u in urls)
    outside = [u for u in urls if not u.startswith(("http://127.0.0.1", "data:", "blob:"))]
    assert outside == []
    assert NETWORK.outbound == []


def test_app_config_stage_and_bad_schema():
    from common.config import resolve_config
    from face_app.launch import AppConfig

    default = resolve_config(AppConfig, "app")
    assert (default.schema, default.host, default.num_threads) == ("stage2", "127.0.0.1", 1)
    v8 = resolve_config(AppConfig, "app", stage="v8_dataset")
    assert v8.schema == "v8" and v8.labels_csv.endswith("scores_labeled_first_2k.csv")
    with pytest.raises(PipelineError, match="label schema"):
        resolve_config(AppConfig, "app", schema="v9")


def test_build_from_repo_wires_generator_directions_faces_and_labels(tmp_path, repo_root):
    from face_app.launch import AppConfig, build_from_repo

    checkpoint = tmp_path / "stylegan/models/embedded_stylegan_64.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.symlink_to(repo_root / "stylegan/models/embedded_stylegan_64.pth")
    write_directions(tmp_path / "vectorfind/v8/property_score_vectors", seed=3)
    write_report(tmp_path / "vectorfind/v8", latent_dim=512)
    (tmp_path / "images").mkdir()
    save_image(np.zeros((8, 8, 3), np.uint8), tmp_path / "images/000004.png")
    config = AppConfig(images_dir="images", labels_csv="labels.csv", schema="v8", saved_dir=str(tmp_path / "out"),
                       generator=str(checkpoint))
    before = torch.get_num_threads()
    try:
        app, editor = build_from_repo(config, repo_root=tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert editor.kinds() == ["chosen"] and editor.groups("chosen") == [GROUP_NAMES[0], GROUP_NAMES[5]]
    assert editor.label_size == 0 and editor.render(np.zeros(512, np.float32), {"eyes": 1.0}).shape == (64, 64, 3)
    assert app.face_app_saved_dir == tmp_path / "out"
    # the layer sliders start at the range the profile's VectorFind edits (embedded: 0-5 of 10)
    sliders = {c.elem_id: c.value for c in app.blocks.values() if getattr(c, "elem_id", None) in ("layer_first",
                                                                                                   "layer_last")}
    assert sliders == {"layer_first": 0, "layer_last": 5}
    write_report(tmp_path / "vectorfind/v8" / "other", latent_dim=519)  # a v8-width report for this generator
    (tmp_path / "vectorfind/v8/image_generation_report/latent_codes_all.csv").unlink()
    (tmp_path / "vectorfind/v8/other/image_generation_report/latent_codes_all.csv").rename(
        tmp_path / "vectorfind/v8/image_generation_report/latent_codes_all.csv")
    with pytest.raises(PipelineError, match="519 latent values, the generator needs 512"):
        build_from_repo(config, repo_root=tmp_path)


def test_app_layer_range_follows_the_profile():
    from face_app.launch import vectorfind_edit_layers

    assert vectorfind_edit_layers("embedded", 10) == (0, 5)
    assert vectorfind_edit_layers("celeba256", 14) is None      # all layers, as the original
    assert vectorfind_edit_layers("embedded", 4) is None        # a generator without layer 5: all layers
