"""The property CNNs of stage 2 (gender, quality) and stage 7 (age, glass), as a function of the
profile's image resolution. Any other binary property picks a stack and a crop (`Architecture`).

Both take the whole image, [N, 3, R, R] floats in [0, 1] (no mean/std normalisation), crop
internally and return one sigmoid score per image. Every conv is 3x3, stride 1, no padding,
followed by LeakyReLU(0.01) and channel dropout 0.05; pools are 2x2 max; then
FC1 = Linear -> tanh -> dropout 0.45 and head = Linear -> sigmoid.

At 256 px the stacks are the original's. Smaller
images are never upsampled: the crops scale with the resolution and each halving of it drops
one conv + pool block, so the final feature map keeps the original's spatial size and the
classifier sees the same amount of spatial structure. Shapes with width_multiplier 1
("C" conv, "P" pool; sizes H x W after each layer):

gender, whole image:
  256: C32 254, C64 252, P 126, C128 124, P 62, C128 60, P 30, C256 28, P 14, C256 12, P 6
       -> 256x6x6 = 9216 -> FC1 512 -> 1
  128: C32 126, C64 124, P 62, C128 60, P 30, C128 28, P 14, C256 12, P 6 -> 256x6x6 = 9216
   64: C32 62, C64 60, P 30, C128 28, P 14, C128 12, P 6 -> 128x6x6 = 4608 -> FC1 512 -> 1
  (the dropped blocks are the last ones, so the small profile does not pay for 256-channel
  convs at large feature maps)

quality, top-centre strip rows [0, R/4), cols [R/4, 3R/4) (where bad images show blur):
  256: strip 64x128: C32 62x126, C64 60x124, P 30x62, C128 28x60, P 14x30, C128 12x28, P 6x14,
       C256 4x12 -> 256x4x12 = 12288 -> FC1 512 -> 1
  128: strip 32x64: C32 30x62, C64 28x60, P 14x30, C128 12x28, P 6x14, C256 4x12 -> 12288
   64: strip 16x32: C32 14x30, C64 12x28, P 6x14, C256 4x12 -> 256x4x12 = 12288
  (the dropped blocks are the middle conv + pool pairs; the final conv stays)

age (P3), gender stack on the top half rows [0, R/2), last pool removed:
  256: 128x256 -> ... C256 12x28, P 6x14, C256 4x12 -> 256x4x12 = 12288 -> FC1 512 -> 1
   64: 32x64 -> C32 30x62, C64 28x60, P 14x30, C128 12x28, P 6x14, C128 4x12 -> 128x4x12 = 6144

glass (P3), quality stack on rows [80, 128) x cols [64, 192) at 256 px ([20, 32) x [16, 48) at 64):
  256: 48x128 -> C32 46x126, C64 44x124, P 22x62, C128 20x60, P 10x30, C128 8x28, P 4x14, C256 2x12
       -> 256x2x12 = 6144 -> FC1 512 -> 1
   64: 12x32 -> C32 10x30, C64 8x28, P 4x14, C256 2x12 -> 256x2x12 = 6144

`width_multiplier` scales every conv's channel count (the embedded profile uses 0.5 to train
ten models on two CPU cores in minutes); FC1 stays 512 wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from common.errors import PipelineError

PROPERTIES = ("gender", "quality")
ORIGINAL_RESOLUTION = 256
SUPPORTED_RESOLUTIONS = (64, 128, 256)
CONV_DROPOUT = 0.05
FC_DROPOUT = 0.45
FC_WIDTH = 512
LEAKY_SLOPE = 0.01

# The original stacks as (stem, blocks, tail); a block is a conv followed by a pool.
_STEM = (32, 64)  # two convs then a pool
_GENDER_BLOCKS = (128, 128, 256, 256)
_QUALITY_BLOCKS = (128, 128)
_QUALITY_TAIL = 256  # a final conv without pool
STACKS = ("gender", "quality")


@dataclass(frozen=True)
class Architecture:
    """A property CNN: which stack, on which crop of the 256 px image (scaled with the resolution),
    and whether the stack's last pool is removed (P3's age model)."""

    stack: str
    crop_256: tuple[int, int, int, int]  # row_start, row_end, col_start, col_end at 256 px
    drop_last_pool: bool = False


ARCHITECTURES = {
    "gender": Architecture("gender", (0, 256, 0, 256)),
    "quality": Architecture("quality", (0, 64, 64, 192)),  # the top-centre strip, where bad images show blur
    "age": Architecture("gender", (0, 128, 0, 256), drop_last_pool=True),  # top half -> 256x4x12
    "glass": Architecture("quality", (80, 128, 64, 192)),  # the eye band -> 256x2x12
}


def _check_resolution(resolution: int) -> int:
    if resolution not in SUPPORTED_RESOLUTIONS:
        raise PipelineError(f"CNN resolution {resolution} is not supported; use one of "
                            f"{', '.join(map(str, SUPPORTED_RESOLUTIONS))}")
    return int(math.log2(ORIGINAL_RESOLUTION // resolution))


def architecture_of(prop: str | Architecture) -> Architecture:
    if isinstance(prop, Architecture):
        return prop
    if prop not in ARCHITECTURES:
        raise ValueError(f"unknown property '{prop}'; expected one of {tuple(ARCHITECTURES)} or an Architecture")
    return ARCHITECTURES[prop]


def crop_window(prop: str | Architecture, resolution: int) -> tuple[int, int, int, int]:
    """(row_start, row_end, col_start, col_end) of the region the property's CNN looks at."""
    dropped = _check_resolution(resolution)
    return tuple(v >> dropped for v in architecture_of(prop).crop_256)


def conv_plan(prop: str | Architecture, resolution: int) -> list[tuple[str, int]]:
    """Layer plan as [("conv", out_channels) | ("pool", 0)] before width scaling."""
    dropped = _check_resolution(resolution)
    architecture = architecture_of(prop)
    plan: list[tuple[str, int]] = [("conv", c) for c in _STEM] + [("pool", 0)]
    if architecture.stack == "gender":
        blocks = _GENDER_BLOCKS[:len(_GENDER_BLOCKS) - dropped]
        for channels in blocks:
            plan += [("conv", channels), ("pool", 0)]
    elif architecture.stack == "quality":
        blocks = _QUALITY_BLOCKS[:len(_QUALITY_BLOCKS) - dropped]
        for channels in blocks:
            plan += [("conv", channels), ("pool", 0)]
        plan.append(("conv", _QUALITY_TAIL))
    else:
        raise ValueError(f"unknown stack '{architecture.stack}'; expected one of {STACKS}")
    if architecture.drop_last_pool:
        last_pool = max(i for i, (kind, _) in enumerate(plan) if kind == "pool")
        del plan[last_pool]
    return plan


def scaled_channels(channels: int, width_multiplier: float) -> int:
    return max(1, int(round(channels * width_multiplier)))


class PropertyCNN(nn.Module):
    """Crop -> conv stack -> flatten -> FC1 (tanh, dropout) -> sigmoid head."""

    def __init__(self, prop: str, resolution: int, width_multiplier: float = 1.0,
                 architecture: Architecture | None = None):
        super().__init__()
        self.prop = prop
        self.resolution = resolution
        architecture = architecture or architecture_of(prop)
        self.window = crop_window(architecture, resolution)
        layers: list[nn.Module] = []
        in_channels = 3
        height, width = self.window[1] - self.window[0], self.window[3] - self.window[2]
        for kind, channels in conv_plan(architecture, resolution):
            if kind == "conv":
                out_channels = scaled_channels(channels, width_multiplier)
                # In place: a conv's backward needs its input, not its output, and inference skips a copy.
                layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3),
                           nn.LeakyReLU(LEAKY_SLOPE, inplace=True), nn.Dropout2d(CONV_DROPOUT)]
                in_channels, height, width = out_channels, height - 2, width - 2
            else:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise PipelineError(f"{prop} CNN: crop {self.window} at {resolution} px is too small for the "
                                    f"{architecture.stack} stack; choose a larger crop")
        self.feature_shape = (in_channels, height, width)
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Sequential(nn.Linear(in_channels * height * width, FC_WIDTH), nn.Tanh(),
                                 nn.Dropout(FC_DROPOUT))
        self.head = nn.Sequential(nn.Linear(FC_WIDTH, 1), nn.Sigmoid())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init for the LeakyReLU convs, Xavier for the tanh FC1, zero biases. PyTorch's default
        init shrinks the signal about 2x per conv here, and the net then needs many epochs just to
        start learning (the original trained without an epoch cap)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.fc1[0].weight, gain=nn.init.calculate_gain("tanh"))
        nn.init.zeros_(self.fc1[0].bias)
        nn.init.xavier_uniform_(self.head[0].weight)
        nn.init.zeros_(self.head[0].bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, R, R] in [0, 1] -> [N] scores in (0, 1)."""
        if images.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"{self.prop} CNN expects {self.resolution}x{self.resolution} images, "
                             f"got {tuple(images.shape[-2:])}")
        r0, r1, c0, c1 = self.window
        x = self.features(images[:, :, r0:r1, c0:c1])
        return self.head(self.fc1(x.flatten(1))).squeeze(1)


def build_property_cnn(prop: str, resolution: int, width_multiplier: float = 1.0,
                       architecture: Architecture | None = None) -> PropertyCNN:
    """The CNN of `prop`: a built-in one of ARCHITECTURES, or `architecture` for any other property."""
    return PropertyCNN(prop, resolution, width_multiplier, architecture)
