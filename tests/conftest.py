import os
import subprocess
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


QUICK_TIMEOUT_S = 1200  # the embedded quick run takes ~6 min on 2 idle cores


def run_quick_pipeline(root: Path, *extra: str, timeout: float = QUICK_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`run_pipeline.py --quick --output-root root` as a user runs it (its own process group)."""
    return subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), "--quick", "--output-root", str(root),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if not k.startswith("OHLORA_")})


@pytest.fixture(scope="session")
def quick_embedded_root(tmp_path_factory) -> Path:
    """One uninterrupted quick run of the embedded profile, shared by the tests that read its outputs.
    TEST_QUICK_ROOT=DIR reuses a finished quick run instead (while working on these tests; the bad-input cases damage
    its files and restore them)."""
    given = os.environ.get("TEST_QUICK_ROOT")
    if given:
        return Path(given).resolve()
    root = tmp_path_factory.mktemp("quick_embedded")
    done = run_quick_pipeline(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root
