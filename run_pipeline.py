"""The whole pipeline, stages 1-9, on one profile, then the HTML report (what `make demo` runs).

    python run_pipeline.py [--profile embedded] [--quick] [--output-root DIR] [--restart] [--report-only]
                           [--stand-in-weights]

Runs every stage script in order, printing each one's summary line and time; writes
reports/<run-id>/ (index.html, stage_times.csv, logs/) and points reports/latest at it.
Killed, it continues the same run when started again: finished steps are skipped and the
interrupted stage resumes from its own files. --restart begins a new run (stages still reuse
their finished outputs; pass --force to a stage script yourself to redo one).

--quick runs every stage at small sizes (configs/quick/<profile>.toml over the profile) in quick_runs/<profile>/,
never touching a full run's files; --output-root DIR puts a run's files (and its reports/) in DIR. One run per
folder: a second pipeline or stage started on the same folder stops with a line naming the one that holds it.

--stand-in-weights (celeba256) first writes stand-in StyleGAN and FaceXFormer checkpoints in the official layout
into the output root (stylegan/stand_in.py: the bundled 64 px generator drawn at 256 px, a random FaceXFormer), so
the 256 px chain runs without downloads; its results have no real quality. It is refused when the output root is the
repository, where a user's downloaded checkpoints go: use it with --quick or --output-root DIR.
"""

import argparse
import os
import sys
from pathlib import Path

from common.config import DEFAULT_PROFILE, add_run_arguments, apply_run_arguments, quick_enabled, read_profile
from common.errors import PipelineError, run_main
from common.paths import OUTPUT_ROOT_ENV, REPO_ROOT, output_root, quick_root
from common.pipeline import DEMO_STEPS, REPORTS, current_run, point_latest, run_pipeline
from common.report import build_report


STAND_IN_BANNER = "!" * 100


def check_stand_in_root(root: Path, profile: str) -> None:
    """--stand-in-weights is refused where a user's downloaded checkpoints go (the repository) and for profiles
    without stand-ins."""
    from stylegan.stand_in import PROFILE

    if profile != PROFILE:
        raise PipelineError(f"--stand-in-weights: stand-ins exist for the {PROFILE} profile only "
                            f"(profile {profile} needs no downloads)")
    if root.resolve() == REPO_ROOT.resolve():
        raise PipelineError("--stand-in-weights would put stand-in checkpoints where your downloaded ones belong "
                            "(the repository); give the run its own folder with --quick or --output-root DIR")


def planned_root(args: argparse.Namespace) -> Path:
    """The output root apply_run_arguments will choose, before it takes that folder's lock."""
    if args.output_root:
        path = Path(args.output_root)
        return (path if path.is_absolute() else REPO_ROOT / path).resolve()
    if os.environ.get(OUTPUT_ROOT_ENV):
        return Path(os.environ[OUTPUT_ROOT_ENV]).resolve()
    return quick_root(args.profile) if args.quick else REPO_ROOT


def build_stand_ins(root: Path, profile: str) -> None:
    """--stand-in-weights: the stand-in checkpoints under `root` (never the repository), announced loudly."""
    from stylegan.stand_in import build_stand_in_weights

    check_stand_in_root(root, profile)
    paths = build_stand_in_weights(root, profile=profile)
    print(STAND_IN_BANNER)
    print("!!! STAND-IN WEIGHTS: these checkpoints are STAND-INS with NO real quality (a 64 px face generator drawn "
          "at 256 px and a RANDOM FaceXFormer); the run tests the code, not the results !!!")
    for path in paths:
        print(f"!!! stand-in checkpoint: {path}")
    print(STAND_IN_BANNER, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--restart", action="store_true", help="start a new run instead of continuing an unfinished one")
    parser.add_argument("--report-only", action="store_true", help="rebuild the latest run's report from the files on disk")
    parser.add_argument("--stand-in-weights", action="store_true",
                        help="write stand-in checkpoints (no real quality) into the output root first; "
                             "not allowed when the output root is the repository")
    parser.add_argument("--steps", help="comma-separated step names to run (default: all): "
                        + ", ".join(step.name for step in DEMO_STEPS))
    add_run_arguments(parser)
    args = parser.parse_args()
    if args.stand_in_weights:
        check_stand_in_root(planned_root(args), args.profile)  # before this run locks the folder
    apply_run_arguments(args, args.profile)  # the output root, and this run's lock on it
    read_profile(args.profile)  # an unknown profile is one line here, not a failure in the first stage
    root = output_root()
    if args.stand_in_weights:
        build_stand_ins(root, args.profile)
    run_args = (("--quick",) if quick_enabled() else ()) + (("--output-root", str(root)) if root != REPO_ROOT else ())
    reports_dir = root / REPORTS
    if args.report_only:
        latest = reports_dir / "latest"
        run_dir = (reports_dir / current_run(reports_dir)) if current_run(reports_dir) else latest.resolve()
        if not run_dir.is_dir():
            raise PipelineError(f"{reports_dir}: no pipeline run yet; run `python run_pipeline.py` first")
    else:
        steps = DEMO_STEPS
        if args.steps:
            wanted = args.steps.split(",")
            unknown = sorted(set(wanted) - {step.name for step in DEMO_STEPS})
            if unknown:
                raise PipelineError(f"unknown step(s) {', '.join(unknown)}; choose from "
                                    + ", ".join(step.name for step in DEMO_STEPS))
            steps = tuple(step for step in DEMO_STEPS if step.name in wanted)
        run_dir = run_pipeline(steps, args.profile, reports_dir, restart=args.restart, run_args=run_args)
    index = build_report(run_dir, args.profile, root=root)
    point_latest(reports_dir, run_dir)
    print(f"report: {index}")
    # The interpreter running this script has the project's packages (a fresh shell's `python` may not).
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    app_args = " ".join(("--profile", args.profile) + run_args)
    print(f"start the face app: {python} run_app.py {app_args}" + ("   (or: make app)" if not run_args else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
