"""Where a run's files live: the output root, and the one way to turn a config path into a file and back.

Paths in configs and CSVs are relative (`stylegan/synthesize_results/000000.png`). They are resolved against the
*output root*: the repository itself by default, so a full run keeps the original project's layout, or another folder
given with `--output-root DIR` (`--quick` picks `quick_runs/<profile>/`), so that a quick or experimental run lives
beside a full one without touching its files. Child processes inherit the root through the environment variable
OHLORA_OUTPUT_ROOT, which is how the pipeline runner, fold workers and segmentation workers agree on it.

Model files that a run reads but never writes (the bundled 64 px generator; the official checkpoints a user downloads)
are found under the output root when they are there (the stand-in weights of a quick celeba256 run) and in the
repository otherwise; every other path is looked up only under the output root, so a quick run can never pick up a
full run's outputs by accident.
"""

from __future__ import annotations

import os
from pathlib import Path

from common import artifacts

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT_ROOT_ENV = "OHLORA_OUTPUT_ROOT"
QUICK_ROOT = "quick_runs"

# Read by stages, written by no stage: shipped with the repository or downloaded by the user.
SUPPLIED_MODELS = artifacts.SUPPLIED_MODELS


def output_root() -> Path:
    """The folder every relative config path is resolved against (default: the repository)."""
    value = os.environ.get(OUTPUT_ROOT_ENV)
    return Path(value) if value else REPO_ROOT


def set_output_root(path: str | Path | None) -> Path:
    """Make `path` (relative paths are taken from the repository) this process's and its children's output root."""
    if path is None or str(path) == "":
        os.environ.pop(OUTPUT_ROOT_ENV, None)
        return REPO_ROOT
    root = Path(path)
    root = (root if root.is_absolute() else REPO_ROOT / root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ[OUTPUT_ROOT_ENV] = str(root)
    return root


def quick_root(profile: str) -> Path:
    """The default output root of `--quick` runs of a profile."""
    return REPO_ROOT / QUICK_ROOT / profile


def resolve_repo_path(path: str | Path) -> Path:
    """A config path as a file: absolute paths as they are, relative ones under the output root (supplied model
    files fall back to the repository's copy)."""
    path = Path(path)
    if path.is_absolute():
        return path
    root = output_root()
    candidate = root / path
    if path.as_posix() in SUPPLIED_MODELS and not candidate.exists() and root != REPO_ROOT:
        return REPO_ROOT / path
    return candidate


def repo_relative(path: str | Path) -> str:
    """How a file is written into CSVs and logs: relative to the output root with '/' separators (a file of the
    repository outside the root: relative to the repository), so that the same run gives the same CSVs wherever its
    root is; a file elsewhere gets a `../` path from the output root, which resolve_repo_path reads back."""
    resolved = Path(path).resolve()
    root = output_root().resolve()
    for base in (root, REPO_ROOT):
        if resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
    return Path(os.path.relpath(resolved, root)).as_posix()
