"""Face app: the edit function and the label store without a UI, then the Edit and Label tabs in headless Chromium."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from face_app.editing import FaceEditor
from face_app.labeling import STAGE2_SCHEMA, LabelStore
from stylegan.stylegan_generator import StyleGANGenerator


def tiny_editor(seed: int = 0) -> tuple[FaceEditor, np.ndarray]:
    torch.manual_seed(seed)
    generator = StyleGANGenerator(resolution=8, z_space_dim=16, w_space_dim=16, mapping_fmaps=16,
                                  fmaps_base=64, fmaps_max=16).eval()
    rng = np.random.default_rng(seed)
    directions = {p: rng.standard_normal(16).astype(np.float32) for p in ("eyes", "mouth", "pose")}
    editor = FaceEditor(generator, directions)
    return editor, editor.w_from_z(rng.standard_normal(16).astype(np.float32))


def test_render_moves_along_direction_and_zero_weight_is_the_plain_face():
    editor, w = tiny_editor()
    with torch.inference_mode():
        wp = torch.from_numpy(w).view(1, 1, -1).repeat(1, editor.generator.num_layers, 1)
        plain = editor.generator.synthesis(torch.cat([wp] * 4))[:1]
    from common.images import to_uint8
    zero = editor.render(w, {"eyes": 0.0, "mouth": 0.0, "pose": 0.0})
    assert np.array_equal(zero, to_uint8(plain)[0])
    moved = editor.render(w, {"eyes": 2.0, "mouth": 0.0, "pose": 0.0})
    assert not np.array_equal(moved, zero)
    same_as_w_shifted = editor.render(w + 2.0 * editor.directions["eyes"], {"eyes": 0.0})
    assert np.abs(moved.astype(int) - same_as_w_shifted.astype(int)).max() <= 1


def test_label_store_resumes_and_keeps_other_rows(tmp_path):
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"img_name": [0, 5], "quality": [1, 0], "gender": [0, 1],
                  "label_source": ["annotator", "hand"]}).to_csv(csv, index=False)
    store = LabelStore(csv, [0, 1, 2, 5], STAGE2_SCHEMA)
    assert store.first_unlabelled() == 1
    store.save(1, {"gender": 1, "quality": 0})
    frame = pd.read_csv(csv)
    assert frame["img_name"].tolist() == [0, 1, 5]
    row = frame.set_index("img_name").loc[1]
    assert (row["gender"], row["quality"], row["label_source"]) == (1, 0, "hand")
    assert frame.set_index("img_name").loc[5, "label_source"] == "hand"
    assert store.first_unlabelled() == 2


# --- browser tests ---------------------------------------------------------------------------------

def chromium_driver():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium / chromium-driver not installed (make test installs them with apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(tmp_path_factory):
    from face_app.app import build_app
    from common.fileio import save_image

    root = tmp_path_factory.mktemp("app")
    images = root / "images"
    images.mkdir()
    for i in range(3):
        save_image(np.full((8, 8, 3), 40 * i, np.uint8), images / f"{i:06d}.png")
    store = LabelStore(root / "labels.csv", [0, 1, 2], STAGE2_SCHEMA)
    editor, w = tiny_editor()
    app = build_app(editor, w, store, images)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True)
    driver = chromium_driver()
    yield f"http://127.0.0.1:{port}", driver, editor, w, store
    driver.quit()
    app.close()


def face_pixels(driver) -> np.ndarray:
    import base64, io
    from PIL import Image

    src = driver.execute_script("return document.querySelector('#face img').src")
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        import urllib.request
        data = urllib.request.urlopen(src).read()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def wait_for(condition, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_slider_move_changes_face_to_the_generated_image(running_app):
    from selenium.webdriver.common.keys import Keys

    url, driver, editor, w, _ = running_app
    driver.get(url)
    wait_for(lambda: driver.execute_script("return !!document.querySelector('#face img')"))
    before = face_pixels(driver)
    assert np.array_equal(before, editor.render(w, {"eyes": 0.0, "mouth": 0.0, "pose": 0.0}))
    slider = driver.find_element("css selector", "#eyes input[type=range]")
    for _ in range(5):
        slider.send_keys(Keys.ARROW_RIGHT)
    expected = editor.render(w, {"eyes": 0.5, "mouth": 0.0, "pose": 0.0})
    wait_for(lambda: np.array_equal(face_pixels(driver), expected))


def test_label_keys_write_rows_and_reload_resumes(running_app):
    url, driver, _, _, store = running_app
    driver.get(url)
    wait_for(lambda: driver.find_elements("xpath", "//button[@role='tab' and contains(., 'Label')]"))
    driver.find_element("xpath", "//button[@role='tab' and contains(., 'Label')]").click()
    box = wait_for(lambda: [e for e in driver.find_elements("css selector", "#label_key textarea, #label_key input")
                            if e.is_displayed()])[0]
    box.send_keys("fgmb")
    wait_for(lambda: store.csv_path.is_file() and len(pd.read_csv(store.csv_path)) == 2)
    frame = pd.read_csv(store.csv_path).set_index("img_name")
    assert frame.loc[0, ["gender", "quality"]].tolist() == [1, 1]
    assert frame.loc[1, ["gender", "quality"]].tolist() == [0, 0]
    assert store.first_unlabelled() == 2
    driver.refresh()
    wait_for(lambda: driver.find_elements("xpath", "//button[@role='tab' and contains(., 'Label')]"))
    driver.find_element("xpath", "//button[@role='tab' and contains(., 'Label')]").click()
    wait_for(lambda: "image 2" in driver.execute_script(
        "const e=document.querySelector('#label_progress textarea, #label_progress input'); return e ? e.value : ''"))
