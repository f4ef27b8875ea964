"""One device rule for every stage, `choose_device(requested)`, and one thread rule, `set_torch_threads(count)`.

* "auto" (every profile's default): the first CUDA device when torch sees one, else the CPU;
* "cpu", "cuda" or "cuda:N": that device; CUDA asked for where there is none (or no device N) is a one-line error.

Each stage's config section has `device = "auto"` and its script a `--device` flag. Stages run in float32 on every
device (no mixed precision).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from common.errors import PipelineError

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def set_torch_threads(count: int) -> int:
    """torch's CPU thread count for this process: `count` when > 0 (0: torch's default, left as it is); returns the
    count before, for torch_threads to restore."""
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    return previous


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """set_torch_threads(count) for the duration of a with-block, then the previous count again."""
    previous = set_torch_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_device_name(requested: str, where: str = "device") -> str:
    """`requested` if it is a device name this rule accepts, else a one-line PipelineError."""
    if not isinstance(requested, str) or not re.fullmatch(DEVICE_PATTERN, requested):
        raise PipelineError(f"{where} = {requested!r}; allowed: {DEVICE_HELP}")
    return requested


def choose_device(requested: str | torch.device | None = "auto") -> torch.device:
    """The torch device for a stage: see the module docstring. A torch.device is taken as it is."""
    if isinstance(requested, torch.device):
        return requested
    requested = check_device_name("auto" if requested is None else requested)
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PipelineError(f"--device {requested}: CUDA is not available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PipelineError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA "
                                f"device(s); use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device
