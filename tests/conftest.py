import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two cores in CI: keep torch from oversubscribing when pytest-xdist is not used.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def one_torch_thread():
    """Small nets: a second thread only adds waiting when another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
