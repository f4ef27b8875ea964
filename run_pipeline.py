"""The whole pipeline, stages 1-9, on one profile, then the HTML report (what `make demo` runs).

    python run_pipeline.py [--profile embedded] [--restart] [--report-only]

Runs every stage script in order, printing each one's summary line and time; writes
reports/<run-id>/ (index.html, stage_times.csv, logs/) and points reports/latest at it.
Killed, it continues the same run when started again: finished steps are skipped and the
interrupted stage resumes from its own files. --restart begins a new run (stages still reuse
their finished outputs; pass --force to a stage script yourself to redo one).
"""

import argparse
import os
import sys

from common.config import DEFAULT_PROFILE, read_profile
from common.errors import PipelineError, run_main
from common.pipeline import DEMO_STEPS, REPORTS_DIR, current_run, point_latest, run_pipeline
from common.report import build_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--restart", action="store_true", help="start a new run instead of continuing an unfinished one")
    parser.add_argument("--report-only", action="store_true", help="rebuild the latest run's report from the files on disk")
    parser.add_argument("--steps", help="comma-separated step names to run (default: all): "
                        + ", ".join(step.name for step in DEMO_STEPS))
    args = parser.parse_args()
    read_profile(args.profile)  # an unknown profile is one line here, not a failure in the first stage
    if args.report_only:
        latest = REPORTS_DIR / "latest"
        run_dir = (REPORTS_DIR / current_run(REPORTS_DIR)) if current_run(REPORTS_DIR) else latest.resolve()
        if not run_dir.is_dir():
            raise PipelineError(f"{REPORTS_DIR}: no pipeline run yet; run `python run_pipeline.py` first")
    else:
        steps = DEMO_STEPS
        if args.steps:
            wanted = args.steps.split(",")
            unknown = sorted(set(wanted) - {step.name for step in DEMO_STEPS})
            if unknown:
                raise PipelineError(f"unknown step(s) {', '.join(unknown)}; choose from "
                                    + ", ".join(step.name for step in DEMO_STEPS))
            steps = tuple(step for step in DEMO_STEPS if step.name in wanted)
        run_dir = run_pipeline(steps, args.profile, restart=args.restart)
    index = build_report(run_dir, args.profile)
    point_latest(REPORTS_DIR, run_dir)
    print(f"report: {index}")
    # The interpreter running this script has the project's packages (a fresh shell's `python` may not).
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    print(f"start the face app: {python} run_app.py --profile {args.profile}   (or: make app)")
    return 0


if __name__ == "__main__":
    run_main(main)
