"""StyleGAN (v1) discriminator whose state_dict matches the GenForce checkpoints key for key.

Blocks run from the full resolution down to 4x4: fromRGB (`input{k}`), a 3x3 conv, a
blurred down-sampling conv; at 4x4 the minibatch-stddev channel, a conv, two dense layers.

Written from the GenForce discriminator's architecture and checkpoint key layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from stylegan.stylegan_generator import Blur, check_resolution, feature_maps, use_fused_scale

_LRELU_SLOPE = 0.2


class DiscriminatorConv(nn.Module):
    """Equalised conv (bias inside), optionally blur-before and down-sample-after, then LeakyReLU.

    `downsample` is None, 'avgpool' (conv then 2x2 average pool) or 'fused' (one stride-2 conv
    whose 4x4 kernel is the average of the four shifted copies of the 3x3 kernel).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, downsample: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.wscale = math.sqrt(2.0) / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2
        self.downsample = downsample
        if downsample is not None:
            self.blur = Blur(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.wscale
        if self.downsample is not None:
            x = self.blur(x)
        if self.downsample == "fused":
            weight = F.pad(weight, (1, 1, 1, 1))
            weight = (weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:] + weight[:, :, 1:, :-1] + weight[:, :, :-1, :-1]) * 0.25
            x = F.conv2d(x, weight, self.bias, stride=2, padding=1)
        else:
            x = F.conv2d(x, weight, self.bias, padding=self.padding)
            if self.downsample == "avgpool":
                x = F.avg_pool2d(x, kernel_size=2, stride=2)
        return F.leaky_relu(x, _LRELU_SLOPE)


class MinibatchStdConv(DiscriminatorConv):
    """Appends the minibatch standard deviation as extra channel(s), then a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, group_size: int = 4, new_channels: int = 1):
        super().__init__(in_channels + new_channels, out_channels)
        self.group_size = group_size
        self.new_channels = new_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(minibatch_stddev(x, self.group_size, self.new_channels))


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, new_channels: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Sample n = g * M + m (M = N / G) joins group m; its std over G is appended as a channel."""
    n, c, h, w = x.shape
    group = min(group_size, n)
    if n % group:
        raise ValueError(f"batch size {n} must be divisible by the minibatch-stddev group size {group}")
    y = x.view(group, -1, new_channels, c // new_channels, h, w)
    y = y - y.mean(dim=0, keepdim=True)
    y = torch.sqrt(y.square().mean(dim=0) + eps)
    y = y.mean(dim=(2, 3, 4), keepdim=True).mean(dim=2)
    y = y.repeat(group, 1, h, w)
    return torch.cat([x, y], dim=1)


class DiscriminatorDense(nn.Module):
    """Equalised dense layer over the flattened (channel-major) input, optional LeakyReLU."""

    def __init__(self, in_features: int, out_features: int, gain: float, activate: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.wscale = gain / math.sqrt(in_features)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x.flatten(1), self.weight * self.wscale, self.bias)
        return F.leaky_relu(x, _LRELU_SLOPE) if self.activate else x


class StyleGANDiscriminator(nn.Module):
    """GenForce-compatible StyleGAN discriminator: image [B, 3, res, res] in [-1, 1] -> score [B, 1]."""

    def __init__(self, resolution: int, image_channels: int = 3, label_size: int = 0,
                 fused_scale: bool | str = "auto", use_wscale: bool = True,
                 minibatch_std_group_size: int = 4, minibatch_std_channels: int = 1,
                 fmaps_base: int = 16 << 10, fmaps_max: int = 512):
        super().__init__()
        check_resolution(resolution)
        if label_size < 0 or not use_wscale:
            raise ValueError("only label_size >= 0 and use_wscale=True are supported by this implementation")
        if fused_scale not in ("auto", True, False):
            raise ValueError(f"fused_scale must be 'auto', True or False, got {fused_scale!r}")
        self.resolution = resolution
        self.image_channels = image_channels
        self.label_size = label_size
        self.num_blocks = int(math.log2(resolution)) - 1
        self.register_buffer("lod", torch.zeros(()))
        for block in range(self.num_blocks):
            res = resolution >> block
            channels = feature_maps(res, fmaps_base, fmaps_max)
            self.add_module(f"input{block}", DiscriminatorConv(image_channels, channels, kernel_size=1))
            if res > 4:
                out_channels = feature_maps(res // 2, fmaps_base, fmaps_max)
                downsample = "fused" if use_fused_scale(fused_scale, res) else "avgpool"
                self.add_module(f"layer{2 * block}", DiscriminatorConv(channels, channels))
                self.add_module(f"layer{2 * block + 1}",
                                DiscriminatorConv(channels, out_channels, downsample=downsample))
            else:
                self.add_module(f"layer{2 * block}", MinibatchStdConv(
                    channels, channels, minibatch_std_group_size, minibatch_std_channels))
                self.add_module(f"layer{2 * block + 1}", DiscriminatorDense(
                    channels * res * res, feature_maps(res // 2, fmaps_base, fmaps_max), math.sqrt(2.0), True))
                # The conditional layout (Oh-LoRA v3) feeds the label into the last dense layer.
                self.add_module(f"layer{2 * block + 2}", DiscriminatorDense(
                    feature_maps(res // 2, fmaps_base, fmaps_max) + label_size, 1, 1.0, False))

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None, lod: float | None = None,
                **_ignored) -> torch.Tensor:
        expected = (self.image_channels, self.resolution, self.resolution)
        if image.ndim != 4 or tuple(image.shape[1:]) != expected:
            raise ValueError(f"image must have shape [batch, {', '.join(map(str, expected))}], got {list(image.shape)}")
        lod = float(self.lod) if lod is None else float(lod)
        x = None
        for block in range(self.num_blocks):
            current_lod = block
            if current_lod <= lod < current_lod + 1:
                x = getattr(self, f"input{block}")(image)
            elif current_lod - 1 < lod < current_lod:
                alpha = lod - math.floor(lod)
                x = alpha * getattr(self, f"input{block}")(image) + (1 - alpha) * x
            if lod < current_lod + 1:
                x = getattr(self, f"layer{2 * block}")(x)
                x = getattr(self, f"layer{2 * block + 1}")(x)
            if lod > current_lod:
                image = F.avg_pool2d(image, kernel_size=2, stride=2)
        if self.label_size:
            if label is None or label.shape != (image.shape[0], self.label_size):
                got = None if label is None else list(label.shape)
                raise ValueError(f"label must have shape [{image.shape[0]}, {self.label_size}], got {got}")
            x = torch.cat([x.flatten(1), label.to(x.dtype)], dim=1)
        return getattr(self, f"layer{2 * self.num_blocks}")(x)
