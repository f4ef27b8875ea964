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
