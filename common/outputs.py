"""What the pipeline writes under an output root, by stage, and `make clean-outputs` (python -m common.outputs).

    python -m common.outputs [--dry-run] [--output-root DIR | --quick] [--profile embedded|celeba256]

removes every output of stages 1-9 and the pipeline's reports under the output root (default: the repository),
holding the root's lock, so it refuses while a run is writing there. What it removes and keeps is common/artifacts.py's
OUTPUTS and KEPT: kept are the stage-2 labels CSV (celeba256 users label by hand; the embedded annotator rewrites it
when missing), the face app's saved edits, and every file the repository ships or a user downloads (base
checkpoints, FaceXFormer weights).
tests/test_outputs.py checks that OUTPUTS covers every file a quick run writes, so this list cannot fall behind.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
from pathlib import Path

from common.artifacts import KEPT, OUTPUTS
from common.errors import run_main


def output_paths(root: Path) -> list[Path]:
    """The existing outputs under root, in stage order."""
    found: list[Path] = []
    for _, patterns in OUTPUTS:
        for pattern in patterns:
            found += sorted(p for p in root.glob(pattern) if p not in found)
    return found


def is_output(rel: str) -> bool:
    """Whether a root-relative file path lies in one of OUTPUTS."""
    path = Path(rel)
    candidates = [path.as_posix()] + [parent.as_posix() for parent in path.parents if parent != Path(".")]
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates for _, patterns in OUTPUTS for pattern in patterns)


def clean(root: Path, dry_run: bool = False) -> list[Path]:
    removed = output_paths(root)
    if not dry_run:
        for path in removed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return removed


def main() -> int:
    from common.config import DEFAULT_PROFILE, add_run_arguments, apply_run_arguments
    from common.paths import output_root, repo_relative

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="the profile whose quick root --quick means")
    add_run_arguments(parser)
    args = parser.parse_args()
    args.dry_run = bool(args.dry_run)
    apply_run_arguments(args, args.profile)   # takes the root's lock unless --dry-run
    root = output_root()
    removed = clean(root, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        print(f"{verb} {repo_relative(path)}")
    print(f"{verb} {len(removed)} output path(s) under {root}; kept: {', '.join(KEPT)} and the shipped / downloaded "
          f"model files")
    return 0


if __name__ == "__main__":
    run_main(main)
