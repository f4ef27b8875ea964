"""The whole pipeline as one resumable run: every stage's script in order, timed, logged, then the report.

A run has an id (UTC time it started) and a folder `reports/<run-id>/` holding each step's log, `stage_times.csv`
and the HTML report. While a run is unfinished its id is kept in `reports/.in_progress`, so running the pipeline
again after a kill (even SIGKILL) continues that run: steps it finished are not started again, and the step that
was killed resumes from the files it had written (every stage script skips finished work by itself).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import artifacts
from common.errors import PipelineError
from common.fileio import atomic_path, atomic_write_text

from common.paths import REPO_ROOT

REPORTS = artifacts.REPORTS  # under the output root
IN_PROGRESS = ".in_progress"
TIMES_FILE = "stage_times.csv"
TIMES_COLUMNS = ["step", "stage", "seconds", "finished_at", "summary"]


@dataclass(frozen=True)
class Step:
    """One invocation of a stage script. `stage` groups steps in the report (several steps make stage 4)."""

    name: str
    stage: str
    script: str
    args: tuple[str, ...] = ()

    def command(self, python: str, profile: str, run_args: tuple[str, ...] = ()) -> list[str]:
        """run_args: the run's --quick / --output-root, passed to every step."""
        return [python, str(REPO_ROOT / self.script), "--profile", profile, *self.args, *run_args]


# The demo order: stage 5's hairstyle CNN learns from the v8 dataset's hairstyle scores, so it (and the merged
# model) come after stage 7; FineTune-v8 needs the v8 dataset; VectorFind searches v8's w space.
DEMO_STEPS: tuple[Step, ...] = (
    Step("1_generate", "1 generate", "run_original_generator.py"),
    Step("2_cnn_filter", "2 gender/quality filter", "run_cnn.py"),
    Step("3_segmentation", "3 segmentation", "run_segmentation.py"),
    Step("4_scores_v1", "4 property scores", "compute_property_scores.py", ("--algorithm", "v1")),
    Step("4_scores_v2", "4 property scores", "compute_property_scores.py", ("--algorithm", "v2")),
    Step("4_scores_hairstyle", "4 property scores", "compute_property_scores.py", ("--algorithm", "hairstyle")),
    Step("5_property_cnn_seven", "5 property CNNs", "run_property_score_cnn.py", ("--model", "seven")),
    Step("6_fine_tune_v1", "6 fine-tuning", "run_stylegan_fine_tuning.py", ("--version", "v1")),
    Step("7_v8_generate", "7 v8 dataset", "run_original_generator.py", ("--stage", "v8_dataset")),
    Step("7_v8_cnn_filter", "7 v8 dataset", "run_cnn.py", ("--stage", "v8_dataset")),
    Step("7_v8_segmentation", "7 v8 dataset", "run_segmentation.py", ("--stage", "v8_dataset")),
    Step("7_v8_hairstyle", "7 v8 dataset", "compute_property_scores.py", ("--stage", "v8_dataset")),
    Step("5_property_cnn_hairstyle", "5 property CNNs", "run_property_score_cnn.py", ("--model", "hairstyle")),
    Step("5_property_cnn_merged", "5 property CNNs", "run_property_score_cnn.py", ("--model", "merged")),
    Step("6_fine_tune_v8", "6 fine-tuning", "run_stylegan_fine_tuning.py", ("--version", "v8")),
    # teacher / base / v1 / v8 side by side: variety, sharpness, annotator fractions and a grid for the report
    Step("6_generator_variety", "6 fine-tuning", "bench/bench_generator_variety.py",
         ("--out", artifacts.GENERATOR_VARIETY, "--threads", "2")),
    Step("8_9_vectorfind", "8-9 VectorFind", "run_vectorfind.py"),
)


def new_run_id(reports_dir: Path) -> str:
    """The UTC start time; a suffix keeps two runs started in the same second apart."""
    base = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_id, n = base, 1
    while (reports_dir / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def current_run(reports_dir: Path) -> str | None:
    marker = reports_dir / IN_PROGRESS
    return marker.read_text().strip() or None if marker.is_file() else None


def read_times(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / TIMES_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and set(TIMES_COLUMNS) - set(rows[0]):
        raise PipelineError(f"{path}: not a stage-times file (columns {TIMES_COLUMNS}); delete it to redo the run")
    return rows


def _write_times(run_dir: Path, rows: list[dict[str, str]]) -> None:
    with atomic_path(run_dir / TIMES_FILE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TIMES_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _run_step(step: Step, command: list[str], log_path: Path) -> tuple[int, str]:
    """Run one stage script; its output goes to the console and to its log. Returns (exit code, summary line)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        captured: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            captured.append(line)
        code = process.wait()
    # The summary is the stage's last line that is not a progress bar.
    text = "".join(line for line in captured if "it/s" not in line and "img/s" not in line and "%|" not in line)
    return code, last_line(text)


def run_pipeline(steps: tuple[Step, ...], profile: str, reports_dir: Path, python: str = sys.executable,
                 restart: bool = False, on_step_done=None, run_args: tuple[str, ...] = ()) -> Path:
    """Run (or continue) the pipeline; return the run folder. A failing step stops the run with a one-line error."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    run_id = None if restart else current_run(reports_dir)
    resumed = run_id is not None
    run_id = run_id or new_run_id(reports_dir)
    run_dir = reports_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(reports_dir / IN_PROGRESS, run_id + "\n")
    rows = read_times(run_dir)
    done = {row["step"] for row in rows}
    print(f"pipeline run {run_id} ({'resumed' if resumed else 'new'}; profile {profile}) -> {run_dir}")
    for step in steps:
        if step.name in done:
            print(f"[{step.name}] done earlier in this run, skipped")
            continue
        print(f"[{step.name}] {' '.join(step.command('python', profile, run_args)[1:])}", flush=True)
        start = time.monotonic()
        code, summary = _run_step(step, step.command(python, profile, run_args), run_dir / "logs" / f"{step.name}.log")
        seconds = time.monotonic() - start
        if code != 0:
            raise PipelineError(
                f"step {step.name} ({step.script}) failed with exit code {code}: {summary or 'no output'}; "
                f"see {run_dir / 'logs' / (step.name + '.log')}, fix it and run the pipeline again to resume")
        rows.append({"step": step.name, "stage": step.stage, "seconds": f"{seconds:.1f}",
                     "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "summary": summary})
        _write_times(run_dir, rows)
        print(f"[{step.name}] {seconds:.0f} s: {summary}", flush=True)
        if on_step_done is not None:
            on_step_done(step)
    (reports_dir / IN_PROGRESS).unlink(missing_ok=True)
    return run_dir


def point_latest(reports_dir: Path, run_dir: Path) -> Path:
    """`reports/latest` -> the newest finished run (a relative symlink, replaced atomically)."""
    link = reports_dir / "latest"
    tmp = reports_dir / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, link)
    return link
