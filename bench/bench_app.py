"""Face app: browser-side median from a slider key press to the new face image's load event (64 px, CPU).

Prints the median and max over N moves, with the machine load, and the server-side render time as the baseline.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.config import REPO_ROOT, resolve_config  # noqa: E402
from face_app.app import build_app  # noqa: E402
from face_app.editing import FaceEditor, pick_generator_path  # noqa: E402
from stylegan.checkpoint import load_generator  # noqa: E402
from stylegan.generate import GeneratorConfig  # noqa: E402

MOVES = 30


def main() -> None:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from test_app import chromium_driver, free_port, wait_for
    from selenium.webdriver.common.keys import Keys

    config = resolve_config(GeneratorConfig, "generator")
    generator = load_generator(pick_generator_path(REPO_ROOT), config.checkpoint_entry, **config.generator_kwargs())
    rng = np.random.default_rng(0)  # seed 0: stand-in directions of typical norm when no vectors exist yet
    directions = {p: rng.standard_normal(generator.w_space_dim).astype(np.float32) * 0.3 for p in ("eyes", "mouth", "pose")}
    editor = FaceEditor(generator, directions)
    w = editor.w_from_z(rng.standard_normal(generator.z_space_dim).astype(np.float32))
    start = time.perf_counter()
    for i in range(10):
        editor.render(w, {"eyes": 0.1 * i})
    server_ms = (time.perf_counter() - start) / 10 * 1000
    app = build_app(editor, w)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True)
    driver = chromium_driver()
    try:
        driver.get(f"http://127.0.0.1:{port}")
        wait_for(lambda: driver.execute_script("return !!document.querySelector('#face img')"))
        slider = driver.find_element("css selector", "#eyes input[type=range]")
        latencies = []
        for move in range(MOVES):
            old_src = driver.execute_script("return document.querySelector('#face img').src")
            driver.execute_script("window.__t0 = performance.now();")
            slider.send_keys(Keys.ARROW_RIGHT if move % 2 == 0 else Keys.ARROW_LEFT)
            wait_for(lambda: driver.execute_script(
                "const i=document.querySelector('#face img'); return i && i.src !== arguments[0] && i.complete "
                "&& i.naturalWidth > 0", old_src), timeout=10)
            latencies.append(driver.execute_script("return performance.now() - window.__t0"))
    finally:
        driver.quit()
        app.close()
    load = os.getloadavg()
    print(f"slider-to-image over {MOVES} moves: median {statistics.median(latencies):.0f} ms, "
          f"max {max(latencies):.0f} ms (target 150 ms); server render alone {server_ms:.1f} ms; "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
