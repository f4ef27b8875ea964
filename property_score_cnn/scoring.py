"""Loading a property CNN file and scoring images with it, batched (the API later stages import).

    model = load_property_cnn("property_score_cnn/models/ohlora_v3_merged_property_cnn.pth")
    scores = score_images(model, images_uint8)             # (N, 8) float32 on the CPU
    scores = score_generator_output(model, generator_out)  # generator floats in [-1, 1], same numbers as
                                                           # scoring the PNGs stage 1 would have written

The file's kind (7-output, hairstyle or merged), width and resolution are read from its keys and shapes,
so a plain state dict (ours, or the original's at 256 px) is all a file needs to hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from common.checkpoints import load_state_strict, read_weights
from common.devices import choose_device
from common.errors import PipelineError
from common.images import to_uint8
from property_score_cnn.models import SUPPORTED_RESOLUTIONS, build_model, channels_last, to_model_input

_FIRST_CONV = {"merged": ("eyes_score_cnn.conv1.0.weight", "hairstyle_score_cnn.bottom_left_cnn.conv1.0.weight"),
               "seven": ("eyes_score_cnn.conv1.0.weight", None),
               "hairstyle": ("bottom_left_cnn.conv1.0.weight", None)}
STEM_CHANNELS = 32


def model_kind(state: dict) -> str:
    if any(k.startswith("hairstyle_score_cnn.") for k in state):
        return "merged"
    if any(k.startswith("bottom_left_cnn.") for k in state):
        return "hairstyle"
    return "seven"


def _width(state: dict, key: str | None, path: Path) -> float:
    if key is None:
        return 1.0
    weight = state.get(key)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise PipelineError(f"{path}: no {key} in the file; not a property CNN state dict "
                            f"(re-run run_property_score_cnn.py with --retrain)")
    return weight.shape[0] / STEM_CHANNELS


def _mismatches(model: nn.Module, state: dict) -> int:
    """Keys missing, unexpected or of another shape between the model and a state dict."""
    expected = model.state_dict()
    wrong_shape = sum(tuple(state[k].shape) != tuple(v.shape) for k, v in expected.items() if k in state)
    return len(set(expected) ^ set(state)) + wrong_shape


def load_property_cnn(path: str | Path, resolution: int | None = None) -> nn.Module:
    """The 7-output, hairstyle or merged CNN stored in `path`, strictly loaded, in eval mode.
    `resolution` None: the one supported resolution whose layout matches the file."""
    path = Path(path)
    state = read_weights(path, missing_hint="train it with run_property_score_cnn.py")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path}: not a state dict of tensors; re-run run_property_score_cnn.py with --retrain")
    kind = model_kind(state)
    widths = [_width(state, key, path) for key in _FIRST_CONV[kind]]
    candidates = [resolution] if resolution is not None else list(reversed(SUPPORTED_RESOLUTIONS))
    models = [build_model(kind, r, *widths) for r in candidates]
    model = min(models, key=lambda m: _mismatches(m, state))  # the exact layout, else the closest for the message
    what = f"{path} ({kind} property CNN, {model.resolution} px; re-run run_property_score_cnn.py with --retrain)"
    if resolution is None and _mismatches(model, state):
        what = (f"{path} ({kind} property CNN; no layout of {', '.join(map(str, SUPPORTED_RESOLUTIONS))} px "
                f"matches, compared with {model.resolution} px; re-run run_property_score_cnn.py with --retrain)")
    load_state_strict(model, state, what)
    return model.eval()


def _as_nchw_uint8(images, resolution: int) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"score_images takes a torch tensor or numpy array, got {type(images).__name__}")
    if tensor.dtype != torch.uint8:
        raise TypeError(f"score_images takes uint8 images (as saved on disk), got {tensor.dtype}; "
                        f"convert generator output with generator_output_to_uint8")
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    side = (resolution, resolution)
    if tensor.ndim == 4 and tensor.shape[1] == 3 and tuple(tensor.shape[2:]) == side:
        return tensor
    if tensor.ndim == 4 and tensor.shape[3] == 3 and tuple(tensor.shape[1:3]) == side:
        return tensor.permute(0, 3, 1, 2)
    raise ValueError(f"expected [N, 3, {resolution}, {resolution}] or [N, {resolution}, {resolution}, 3] uint8 "
                     f"images for this {resolution} px model, got {tuple(tensor.shape)}")


@torch.inference_mode()
def score_images(model: nn.Module, images, batch_size: int = 256, device: torch.device | str | None = None
                 ) -> torch.Tensor:
    """(N, K) float32 scores on the CPU for uint8 images (NHWC or NCHW, torch or numpy); eval mode
    (dropout off), batched, under inference_mode, on `device` (common/devices.py choose_device: default auto, cuda when available). The model is moved to the
    device and its train/eval mode is restored afterwards."""
    nchw = _as_nchw_uint8(images, model.resolution)
    device = choose_device(device)
    was_training = model.training
    channels_last(model.to(device)).eval()
    try:
        outputs = []
        for start in range(0, len(nchw), batch_size):
            batch = nchw[start:start + batch_size].to(device, non_blocking=True)
            outputs.append(model(to_model_input(batch)).float().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return torch.zeros(0, len(model.output_names), dtype=torch.float32)
    return torch.cat(outputs)


def generator_output_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator floats [N, 3, H, W] in [-1, 1] -> the uint8 NHWC pixels stage 1 saves as PNG."""
    return torch.from_numpy(to_uint8(images))


def score_generator_output(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Scores of generator output without a PNG round trip (identical to scoring the saved PNGs)."""
    return score_images(model, generator_output_to_uint8(images), batch_size)
