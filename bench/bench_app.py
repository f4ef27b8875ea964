"""Face app: browser-side median from a slider change (its input event) to the new face image's load event.

    .venv/bin/python bench/bench_app.py [--moves 60] [--threads 1]

Prints the browser median / max over the moves, the render time inside the app's handler during them, the
render alone before the app starts (batch 1 as the app renders, and the generation stage's padded batch of
4 for comparison), and the machine load (1-minute average) before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from face_app.app import build_app, serve  # noqa: E402
from face_app.cases import seeded_face  # noqa: E402
from face_app.editing import FaceEditor, load_app_generator  # noqa: E402
from stylegan.generate import batch_invariant  # noqa: E402


PROPERTIES = ("eyes", "mouth", "pose")
BURST = 15
PAGE_TIMING_JS = """
for (const id of ['eyes', 'mouth', 'pose']) {
  document.querySelector('#' + id + ' input[type=range]').addEventListener('input', () => {
    window.__input_at = performance.now(); window.__loaded_at = null; }, true);
}
document.addEventListener('load', (e) => {
  if (e.target.closest && e.target.closest('#face')) window.__loaded_at = performance.now(); }, true);
"""
WAIT_FOR_IMAGE_JS = """
const done = arguments[arguments.length - 1];
const check = () => (window.__loaded_at && window.__loaded_at > window.__input_at)
  ? done(window.__loaded_at - window.__input_at) : setTimeout(check, 5);
check();
"""


def timed_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the app's [app] num_threads)")
    parser.add_argument("--queue", action="store_true", help="send renders through Gradio's queue (for comparison)")
    args = parser.parse_args()
    from face_app.browser import chromium_driver, free_port, wait_for
    from selenium.webdriver.common.keys import Keys

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    generator, choice = load_app_generator("", "embedded")
    label_size = choice.label_size
    rng = np.random.default_rng(0)  # seed 0: stand-in unit directions when no VectorFind vectors exist yet
    directions = {}
    for prop in ("eyes", "mouth", "pose"):
        vector = rng.standard_normal(generator.w_space_dim).astype(np.float32)
        directions[prop] = vector / np.linalg.norm(vector)
    editor = FaceEditor(generator, directions, label_size=label_size)
    face = seeded_face(0, generator.z_space_dim + label_size)
    w = editor.w_from_latent(face.latent)
    wp = editor.edited_wp(w, {"eyes": 0.5})
    with torch.inference_mode():
        editor.render(w, {"eyes": 0.1})
        render_alone = timed_ms(lambda: editor.render(w, {"eyes": 0.5}), 20)
        padded = timed_ms(lambda: batch_invariant(generator.synthesis, wp), 10)

    handler_ms = []
    plain_render = editor.render

    def recorded_render(*a, **k):
        start = time.perf_counter()
        image = plain_render(*a, **k)
        handler_ms.append((time.perf_counter() - start) * 1000)
        return image

    editor.render = recorded_render
    app = build_app(editor, [face], queue_renders=args.queue)
    port = free_port()
    serve(app, "127.0.0.1", port, block=False)
    driver = chromium_driver()
    try:
        driver.get(f"http://127.0.0.1:{port}")
        wait_for(lambda: driver.execute_script("return !!document.querySelector('#face img')"))
        # Timed in the page: from the slider's input event to the face image's load event, so neither
        # WebDriver round trips nor polling are counted. Each move is a new value (no browser cache hits).
        driver.set_script_timeout(10)
        driver.execute_script(PAGE_TIMING_JS)
        handler_ms.clear()
        latencies = []
        for move in range(args.moves):
            prop = PROPERTIES[(move // 30) % len(PROPERTIES)]
            slider = driver.find_element("css selector", f"#{prop} input[type=range]")
            slider.send_keys(Keys.ARROW_RIGHT)
            latencies.append(driver.execute_async_script(WAIT_FOR_IMAGE_JS))
            time.sleep(0.05)
        renders_before = len(handler_ms)
        slider = driver.find_element("css selector", "#pose input[type=range]")
        slider.send_keys(*[Keys.ARROW_LEFT] * BURST)
        burst_ms = driver.execute_async_script(WAIT_FOR_IMAGE_JS)
        time.sleep(1.0)
        burst_renders = len(handler_ms) - renders_before
    finally:
        driver.quit()
        app.close()
    load_after = os.getloadavg()[0]
    print(f"slider-to-image over {args.moves} moves: median {statistics.median(latencies):.0f} ms, "
          f"max {max(latencies):.0f} ms (target 150 ms); renders {'queued' if args.queue else 'unqueued'}")
    print(f"a burst of {BURST} key presses: {burst_renders} render(s), last image {burst_ms:.0f} ms after the "
          f"last input event")
    print(f"render inside the app's handler: median {statistics.median(handler_ms):.1f} ms over "
          f"{len(handler_ms)} renders")
    print(f"render alone: {render_alone:.1f} ms (batch 1, as the app); generation stage's padded batch of 4: "
          f"{padded:.1f} ms; torch threads {torch.get_num_threads()}; "
          f"load (1 min) {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
