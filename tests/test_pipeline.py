"""The pipeline runner (resume after SIGKILL, one-line failure) and the HTML report (every image loads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from common.errors import PipelineError
from common.fileio import save_image
from common.pipeline import IN_PROGRESS, Step, current_run, read_times, run_pipeline
from common.report import Section, build_report

ROOT = Path(__file__).resolve().parent.parent


def write_stage(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def fake_steps(tmp_path: Path, out: Path) -> tuple[Step, ...]:
    """Three stages: the second one hangs on its first start (the kill point), each counts its starts."""
    common = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        out = Path({str(out)!r}); out.mkdir(exist_ok=True)
        name = Path(__file__).stem
        with open(out / (name + '.starts'), 'a') as f: f.write('x')
    """)
    first = write_stage(tmp_path / "first.py", common + "(out / 'first.txt').write_text('1')\nprint('first done')\n")
    second = write_stage(tmp_path / "second.py", common + textwrap.dedent("""
        flag = out / 'second.hung'
        if not flag.exists():
            flag.write_text('')
            time.sleep(120)
        (out / 'second.txt').write_text((out / 'first.txt').read_text() + '2')
        print('second done')
    """))
    third = write_stage(tmp_path / "third.py", common + "(out / 'third.txt').write_text((out / 'second.txt')"
                        ".read_text() + '3')\nprint('third: 3 files')\n")
    return (Step("a", "stage a", str(first)), Step("b", "stage b", str(second)), Step("c", "stage c", str(third)))


DRIVER = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from common.pipeline import Step, run_pipeline
steps = tuple(Step(n, 's ' + n, s) for n, s in {steps!r})
run_pipeline(steps, 'embedded', reports_dir=Path({reports!r}))
"""


def test_sigkill_mid_stage_then_rerun_continues_the_same_run(tmp_path):
    out, reports = tmp_path / "out", tmp_path / "reports"
    steps = fake_steps(tmp_path, out)
    code = DRIVER.format(root=str(ROOT), steps=[(s.name, s.script) for s in steps], reports=str(reports))
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / "second.hung").exists():
        assert time.monotonic() < deadline and process.poll() is None, "the pipeline did not reach stage b"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # like SIGKILL of `make demo` and its children
    process.wait()
    run_id = current_run(reports)
    assert run_id is not None and [r["step"] for r in read_times(reports / run_id)] == ["a"]

    run_dir = run_pipeline(steps, "embedded", reports_dir=reports)
    assert run_dir.name == run_id and not (reports / IN_PROGRESS).exists()
    assert (out / "third.txt").read_text() == "123"
    assert (out / "first.starts").read_text() == "x"  # finished before the kill: not started again
    assert (out / "second.starts").read_text() == "xx"
    rows = read_times(run_dir)
    assert [r["step"] for r in rows] == ["a", "b", "c"]
    assert rows[2]["summary"] == "third: 3 files"

    again = run_pipeline(steps, "embedded", reports_dir=reports)  # a finished run is not continued: a new one
    assert again.name != run_id and (out / "first.starts").read_text() == "xx"


def test_failing_stage_is_one_line_naming_the_step_and_log(tmp_path):
    bad = write_stage(tmp_path / "bad.py", "import sys\nprint('error: x.csv is truncated', file=sys.stderr)\n"
                      "sys.exit(2)\n")
    with pytest.raises(PipelineError) as info:
        run_pipeline((Step("2_cnn_filter", "2", str(bad)),), "embedded", reports_dir=tmp_path / "reports")
    message = str(info.value)
    assert "\n" not in message and "2_cnn_filter" in message and "x.csv is truncated" in message
    assert "2_cnn_filter.log" in message
    assert current_run(tmp_path / "reports") is not None  # still resumable


def report_fixture(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "repo"
    (root / "stage").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("grid.png", "curves.png", "preview_000010.png", "preview_000020.png"):
        save_image(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8), root / "stage" / name)
    (root / "stage" / "metrics.csv").write_text("property,r\neyes,0.91\nmouth,0.88\n")
    (root / "stage" / "run.config.json").write_text('{"seed": 7}')
    run_dir = tmp_path / "reports" / "run1"
    run_dir.mkdir(parents=True)
    (run_dir / "stage_times.csv").write_text("step,stage,seconds,finished_at,summary\na,s,1.5,now,ok\n")
    return root, run_dir


SECTIONS = (Section("stage", images=("stage/grid.png", "stage/curves.png"), latest=("stage/preview_*.png",), tables=("stage/metrics.csv",),
                    configs=("stage/*.config.json",)),
            Section("not run yet", images=("later/*.png",)))


def test_report_copies_images_and_shows_tables(tmp_path):
    root, run_dir = report_fixture(tmp_path)
    page = build_report(run_dir, "embedded", root=root, sections=SECTIONS).read_text()
    assert page.count("<img ") == 3 and "assets/stage__grid.png" in page
    assert "preview_000020" in page and "preview_000010" not in page  # only the newest preview
    assert (run_dir / "assets" / "stage__curves.png").read_bytes() == (root / "stage" / "curves.png").read_bytes()
    assert "<td>0.88</td>" in page and "&quot;seed&quot;: 7" in page and "no outputs of this stage yet" in page
    assert "<td>1.5</td>" in page


def test_report_opens_in_chromium_from_a_copied_folder_and_every_image_loads(tmp_path):
    from face_app.browser import BROWSER_MISSING, browser_available, chromium_driver

    if not browser_available():
        pytest.skip(BROWSER_MISSING)
    root, run_dir = report_fixture(tmp_path)
    build_report(run_dir, "embedded", root=root, sections=SECTIONS)
    moved = tmp_path / "elsewhere"
    os.rename(run_dir, moved)  # relative paths: the folder works wherever it is
    driver = chromium_driver()
    try:
        driver.get((moved / "index.html").as_uri())
        sizes = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    finally:
        driver.quit()
    assert sizes == [[True, 24, 16]] * 3
