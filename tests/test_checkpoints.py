"""common/checkpoints.py: weights-only reads, strict one-line key errors, atomic writes."""

import pytest
import torch
import torch.nn as nn

from common.checkpoints import load_state_strict, read_weights, save_weights
from common.errors import PipelineError


def test_round_trip_and_no_temp_file_left(tmp_path):
    path = tmp_path / "m.pt"
    model = nn.Linear(3, 2)
    save_weights(path, {"model": model.state_dict()})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    other = nn.Linear(3, 2)
    load_state_strict(other, read_weights(path)["model"], str(path))
    assert torch.equal(other.weight, model.weight)


def test_missing_file_names_it_and_the_hint(tmp_path):
    with pytest.raises(PipelineError, match=r"nope\.pt: checkpoint not found; run the trainer"):
        read_weights(tmp_path / "nope.pt", "run the trainer")


class Payload:
    """Any non-tensor class stands for code: unpickling it would import and run project code."""


def test_code_carrying_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(PipelineError, match="refused to load") as info:
        read_weights(path)
    assert "\n" not in str(info.value)


def test_corrupt_file_is_one_line(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="not a readable torch checkpoint") as info:
        read_weights(path)
    assert "\n" not in str(info.value)


def test_strict_load_names_every_kind_of_difference_in_one_line():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    state = dict(model.state_dict())
    state["0.weight"] = torch.zeros(5, 3)
    del state["1.bias"]
    state["extra"] = torch.zeros(1)
    with pytest.raises(PipelineError) as info:
        load_state_strict(model, state, "src.pt")
    message = str(info.value)
    assert "\n" not in message
    assert "missing: 1.bias" in message and "unexpected: extra" in message and "0.weight (5, 3) vs (2, 3)" in message


def test_save_weights_leaves_a_file_with_the_same_tensors_alone(tmp_path):
    from common.checkpoints import save_weights

    path = tmp_path / "model.pth"
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    assert save_weights(path, state, skip_identical=True)
    first = path.read_bytes()
    assert not save_weights(path, {k: v.clone() for k, v in state.items()}, skip_identical=True)
    assert path.read_bytes() == first  # torch.save would have written other bytes (a fresh serialization id)
    assert save_weights(path, {"w": state["w"] + 1, "b": state["b"]}, skip_identical=True)
    assert path.read_bytes() != first
