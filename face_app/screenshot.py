"""The README's screenshot: the app built from the repository's files, photographed by headless Chromium.

    .venv/bin/python -m face_app.screenshot [--out docs/face_app_edit.png] [--tab Edit] [--eyes 1.0]
                                            [--output-root DIR]   (the run whose generator and directions it shows)
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common.config import REPO_ROOT, add_run_arguments, resolve_config
from common.errors import PipelineError, run_main
from common.fileio import atomic_path
from face_app.browser import BROWSER_MISSING, browser_available, chromium_driver, free_port, open_tab, wait_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/face_app_edit.png")
    parser.add_argument("--tab", default="Edit", choices=("Edit", "Select", "Label"))
    parser.add_argument("--eyes", type=float, default=1.0, help="eyes slider value shown (Edit tab)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=860)
    add_run_arguments(parser)
    args = parser.parse_args()
    if not browser_available():
        raise PipelineError(BROWSER_MISSING)
    from selenium.webdriver.common.keys import Keys

    from face_app.app import serve
    from face_app.launch import AppConfig, build_from_repo

    with tempfile.TemporaryDirectory() as scratch:
        config = resolve_config(AppConfig, "app", args, saved_dir=scratch)
        app, _ = build_from_repo(config)
        port = free_port()
        serve(app, "127.0.0.1", port, block=False)
        driver = chromium_driver(args.width, args.height)
        try:
            driver.get(f"http://127.0.0.1:{port}")
            wait_for(lambda: driver.execute_script("return !!document.querySelector('#face img')"))
            if args.tab == "Edit" and args.eyes:
                slider = driver.find_element("css selector", "#eyes input[type=range]")
                slider.send_keys(*[Keys.ARROW_RIGHT] * int(round(args.eyes / 0.1)))
            else:
                open_tab(driver, args.tab)
            time.sleep(1.5)  # the last render and the page's transitions
            out = REPO_ROOT / args.out
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(out) as tmp:
                tmp.write_bytes(driver.get_screenshot_as_png())
        finally:
            driver.quit()
            app.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
