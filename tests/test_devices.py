"""The one device rule and the one thread rule (common/devices.py)."""

import pytest
import torch

from common.devices import check_device_name, choose_device, set_torch_threads, torch_threads
from common.errors import PipelineError


def test_device_names():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert check_device_name("cuda:1") == "cuda:1"
    with pytest.raises(PipelineError, match="allowed: auto"):
        check_device_name("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="CUDA is not available"):
            choose_device("cuda")


def test_threads_set_for_a_block_and_restored():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0: torch's default, left alone
        assert torch.get_num_threads() == before
    try:
        with torch_threads(target):
            raise RuntimeError("a stage failed")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before
    assert set_torch_threads(target) == before and torch.get_num_threads() == target
    torch.set_num_threads(before)
