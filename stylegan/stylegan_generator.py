"""StyleGAN (v1) generator whose state_dict matches the GenForce checkpoints key for key.

Read top to bottom in the order data flows: mapping (z -> w), truncation (w -> wp),
synthesis (wp -> image). Every weighted layer stores its raw parameter and applies the
equalised-learning-rate scale at run time, as the checkpoints expect.

Written from the GenForce generator's architecture and checkpoint key layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

_RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
_INIT_RES = 4
_LRELU_SLOPE = 0.2
_EPS = 1e-8


def feature_maps(res: int, fmaps_base: int, fmaps_max: int) -> int:
    """Channels at resolution `res`: nf(r) = min(fmaps_base // r, fmaps_max)."""
    return min(fmaps_base // res, fmaps_max)


def use_fused_scale(fused_scale: bool | str, res: int) -> bool:
    """'auto' fuses up/down-sampling into the convolution from 128 px on."""
    if fused_scale == "auto":
        return res >= 128
    return bool(fused_scale)


def check_resolution(resolution: int) -> None:
    if resolution not in _RESOLUTIONS:
        raise ValueError(f"resolution {resolution} is not supported; choose one of {_RESOLUTIONS}")


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.square().mean(dim=1, keepdim=True) + _EPS)


def instance_norm(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x / torch.sqrt(x.square().mean(dim=(2, 3), keepdim=True) + _EPS)


def blur_kernel(channels: int) -> torch.Tensor:
    """Depthwise [1,2,1] x [1,2,1] / 16 kernel, one copy per channel: shape [C, 1, 3, 3]."""
    k = torch.tensor([1.0, 2.0, 1.0])
    k = torch.outer(k, k)
    return (k / k.sum()).expand(channels, 1, 3, 3).clone()


class Blur(nn.Module):
    """Depthwise 3x3 low-pass filter; the kernel is a checkpoint buffer named `kernel`."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


class MappingDense(nn.Module):
    """Dense layer with equalised learning rate and a learning-rate multiplier, then LeakyReLU."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.wscale = math.sqrt(2.0) / math.sqrt(in_features) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.wscale, self.bias * self.lr_mul)
        return F.leaky_relu(x, _LRELU_SLOPE)


LABEL_EMBEDDING_DIM = 16


class MappingModule(nn.Module):
    """(z, label) -> w: z ++ label embedding, pixel norm, then `num_layers` dense layers each with LeakyReLU.

    With `label_size = 0` there is no embedding and `label` must be None (the GenForce checkpoint);
    otherwise `label_weight` [label_size, 16] embeds the label and dense0 takes z_space_dim + 16
    inputs (the Oh-LoRA v3 conditional layout).
    """

    def __init__(self, z_space_dim: int = 512, w_space_dim: int = 512, num_layers: int = 8,
                 hidden_dim: int = 512, lr_mul: float = 0.01, label_size: int = 0):
        super().__init__()
        self.z_space_dim = z_space_dim
        self.num_layers = num_layers
        self.label_size = label_size
        input_dim = z_space_dim
        if label_size:
            self.label_weight = nn.Parameter(torch.randn(label_size, LABEL_EMBEDDING_DIM))
            input_dim += LABEL_EMBEDDING_DIM
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [w_space_dim]
        for i in range(num_layers):
            self.add_module(f"dense{i}", MappingDense(dims[i], dims[i + 1], lr_mul))

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_space_dim:
            raise ValueError(f"z must have shape [batch, {self.z_space_dim}], got {list(z.shape)}")
        if self.label_size:
            if label is None or label.shape != (z.shape[0], self.label_size):
                got = None if label is None else list(label.shape)
                raise ValueError(f"label must have shape [{z.shape[0]}, {self.label_size}], got {got}")
            z = torch.cat([z, label.to(z.dtype) @ self.label_weight], dim=1)
        elif label is not None and label.numel() > 0:
            raise ValueError("this mapping has label_size 0 and takes no label")
        x = pixel_norm(z)
        for i in range(self.num_layers):
            x = getattr(self, f"dense{i}")(x)
        return x


class TruncationModule(nn.Module):
    """w -> wp (one w per synthesis layer), optionally pulled towards the running average w_avg."""

    def __init__(self, w_space_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_space_dim))

    def forward(self, w: torch.Tensor, trunc_psi: float | None = None,
                trunc_layers: int | None = None) -> torch.Tensor:
        wp = w.unsqueeze(1).repeat(1, self.num_layers, 1) if w.ndim == 2 else w
        psi = 1.0 if trunc_psi is None else trunc_psi
        layers = 0 if trunc_layers is None else trunc_layers
        if psi < 1.0 and layers > 0:
            # Same arithmetic as the reference for every layer (coefficient 1 beyond `layers`), so outputs match bit for bit.
            coefs = torch.ones(1, self.num_layers, 1, dtype=wp.dtype, device=wp.device)
            coefs[:, :layers] = psi
            wp = self.w_avg + (wp - self.w_avg) * coefs
        return wp


class NoiseLayer(nn.Module):
    """Adds per-pixel noise scaled per channel; the fixed noise is a checkpoint buffer."""

    def __init__(self, channels: int, res: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.register_buffer("noise", torch.randn(1, 1, res, res))

    def forward(self, x: torch.Tensor, randomize_noise: bool) -> torch.Tensor:
        if randomize_noise:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise
        return x + noise * self.weight.view(1, -1, 1, 1)


class StyleAffine(nn.Module):
    """w -> per-channel (scale, shift); equalised weight with gain 1, bias used as stored."""

    def __init__(self, w_space_dim: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels * 2, w_space_dim))
        self.bias = nn.Parameter(torch.zeros(channels * 2))
        self.wscale = 1.0 / math.sqrt(w_space_dim)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return F.linear(w, self.weight * self.wscale, self.bias)


class StyledLayer(nn.Module):
    """One synthesis layer: [const | conv | up-conv + blur] -> noise -> bias -> lrelu -> IN -> AdaIN.

    `kind` is 'const' (the learned 4x4 input), 'conv' (3x3, same size), 'upsample'
    (nearest x2 then conv) or 'fused_upsample' (one stride-2 transposed conv).
    """

    def __init__(self, kind: str, in_channels: int, out_channels: int, res: int, w_space_dim: int):
        super().__init__()
        self.kind = kind
        # Registration order (bias, const/weight, noise, style, blur) reproduces the checkpoint's key order.
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if kind == "const":
            self.const = nn.Parameter(torch.ones(1, out_channels, res, res))
        else:
            self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
            self.wscale = math.sqrt(2.0) / math.sqrt(in_channels * 9)
        self.apply_noise = NoiseLayer(out_channels, res)
        self.style = StyleAffine(w_space_dim, out_channels)
        if kind in ("upsample", "fused_upsample"):
            self.blur = Blur(out_channels)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.wscale
        if self.kind == "conv":
            return F.conv2d(x, weight, padding=1)
        if self.kind == "upsample":
            # Nearest x2 then a 3x3 conv equals one stride-2 transposed conv whose 4x4 kernel sums the
            # spatially flipped 3x3 kernel's shifted windows (equal up to float rounding): a quarter of the
            # multiply-adds on no upsampled copy, about half the time on CPU.
            return self.blur(summed_transposed_conv(x, weight.flip(2, 3)))
        # Fused (GenForce from 128 px): the same construction on the unflipped kernel - a different layer, as trained.
        return self.blur(summed_transposed_conv(x, weight))

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, randomize_noise: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "const":
            x = self.const.repeat(w.shape[0], 1, 1, 1)
        else:
            x = self.convolve(x)
        style = self.style(w)
        scale, shift = style.view(-1, 2, x.shape[1], 1, 1).unbind(dim=1)
        if self.training or torch.is_grad_enabled() or self.kind == "const":
            x = self.apply_noise(x, randomize_noise)
            x = x + self.bias.view(1, -1, 1, 1)
            x = instance_norm(F.leaky_relu(x, _LRELU_SLOPE))
            return x * (scale + 1.0) + shift, style
        # Eval-mode inference: the same operations in place (these memory-bound element-wise passes are a third of
        # the time; in place they skip allocating a new activation each), noise and bias added in one pass (the
        # sum is a per-pixel map, not a full activation; equal up to float rounding).
        noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype) if randomize_noise \
            else self.apply_noise.noise
        x.add_(noise * self.apply_noise.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1))
        F.leaky_relu_(x, _LRELU_SLOPE)
        x.sub_(x.mean(dim=(2, 3), keepdim=True))
        x.div_(torch.sqrt(x.square().mean(dim=(2, 3), keepdim=True) + _EPS))
        return x.mul_(scale + 1.0).add_(shift), style


def summed_transposed_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Stride-2 transposed conv with the 3x3 `weight` padded to 5x5 and its four shifted 4x4 windows summed
    (no 0.25 factor): output size 2x the input's."""
    weight = F.pad(weight, (1, 1, 1, 1))
    weight = weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:] + weight[:, :, 1:, :-1] + weight[:, :, :-1, :-1]
    return F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=1)


class ToRGB(nn.Module):
    """1x1 convolution to RGB with gain 1 and a bias; no activation."""

    def __init__(self, in_channels: int, image_channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(image_channels))
        self.weight = nn.Parameter(torch.randn(image_channels, in_channels, 1, 1))
        self.wscale = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.wscale) + self.bias.view(1, -1, 1, 1)


class SynthesisModule(nn.Module):
    """wp [B, num_layers, w_dim] -> image [B, 3, res, res] (no tanh, nominal range [-1, 1])."""

    def __init__(self, resolution: int, w_space_dim: int = 512, image_channels: int = 3,
                 fused_scale: bool | str = "auto", fmaps_base: int = 16 << 10, fmaps_max: int = 512):
        super().__init__()
        check_resolution(resolution)
        self.resolution = resolution
        self.final_res_log2 = int(math.log2(resolution))
        self.num_blocks = self.final_res_log2 - 1
        self.num_layers = self.num_blocks * 2
        self.register_buffer("lod", torch.zeros(()))
        for block in range(self.num_blocks):
            res = _INIT_RES << block
            channels = feature_maps(res, fmaps_base, fmaps_max)
            if block == 0:
                first = StyledLayer("const", channels, channels, res, w_space_dim)
            else:
                in_channels = feature_maps(res // 2, fmaps_base, fmaps_max)
                kind = "fused_upsample" if use_fused_scale(fused_scale, res) else "upsample"
                first = StyledLayer(kind, in_channels, channels, res, w_space_dim)
            self.add_module(f"layer{2 * block}", first)
            self.add_module(f"layer{2 * block + 1}", StyledLayer("conv", channels, channels, res, w_space_dim))
            self.add_module(f"output{block}", ToRGB(channels, image_channels))

    def forward(self, wp: torch.Tensor, lod: float | None = None, randomize_noise: bool = False,
                return_styles: bool = False):
        if wp.ndim != 3 or wp.shape[1] != self.num_layers:
            raise ValueError(f"wp must have shape [batch, {self.num_layers}, w_dim], got {list(wp.shape)}")
        lod = float(self.lod) if lod is None else float(lod)
        if lod > self.final_res_log2 - 2:
            raise ValueError(f"lod {lod} exceeds the maximum {self.final_res_log2 - 2}")
        styles: dict[str, torch.Tensor] = {}
        x = image = None
        for block in range(self.num_blocks):
            current_lod = self.final_res_log2 - 2 - block
            if lod < current_lod + 1:
                for layer_idx in (2 * block, 2 * block + 1):
                    x, style = getattr(self, f"layer{layer_idx}")(x, wp[:, layer_idx], randomize_noise)
                    styles[f"style{layer_idx:02d}"] = style
            if current_lod - 1 < lod <= current_lod:
                image = getattr(self, f"output{block}")(x)
            elif current_lod < lod < current_lod + 1:
                alpha = math.ceil(lod) - lod
                image = alpha * getattr(self, f"output{block}")(x) + (1 - alpha) * upsample_nearest(image)
            elif lod >= current_lod + 1:
                image = upsample_nearest(image)
        return (image, styles) if return_styles else image


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class StyleGANGenerator(nn.Module):
    """GenForce-compatible StyleGAN generator.

    forward(z) returns a dict with `z` (pixel-normalised, as GenForce returns it), `w`, `wp`,
    `style00`..., and `image`. In eval mode the output is a pure function of z and the
    truncation arguments. In training mode w_avg is updated and, only when
    `style_mixing_prob > 0` is passed, styles of a second latent are mixed in.
    """

    def __init__(self, resolution: int, z_space_dim: int = 512, w_space_dim: int = 512,
                 label_size: int = 0, mapping_layers: int = 8, mapping_fmaps: int = 512,
                 mapping_lr_mul: float = 0.01, repeat_w: bool = True, image_channels: int = 3,
                 final_tanh: bool = False, const_input: bool = True, fused_scale: bool | str = "auto",
                 use_wscale: bool = True, noise_type: str = "spatial", fmaps_base: int = 16 << 10,
                 fmaps_max: int = 512):
        super().__init__()
        check_resolution(resolution)
        if label_size < 0:
            raise ValueError(f"label_size must be >= 0, got {label_size}")
        unsupported = {"repeat_w": (repeat_w, True), "final_tanh": (final_tanh, False),
                       "const_input": (const_input, True), "use_wscale": (use_wscale, True),
                       "noise_type": (noise_type, "spatial")}
        for name, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"{name}={value!r} is not supported by this implementation (only {supported!r})")
        if fused_scale not in ("auto", True, False):
            raise ValueError(f"fused_scale must be 'auto', True or False, got {fused_scale!r}")
        self.resolution = resolution
        self.z_space_dim = z_space_dim
        self.w_space_dim = w_space_dim
        self.image_channels = image_channels
        self.label_size = label_size
        self.num_layers = int(math.log2(resolution // _INIT_RES * 2)) * 2
        self.mapping = MappingModule(z_space_dim, w_space_dim, mapping_layers, mapping_fmaps, mapping_lr_mul,
                                     label_size)
        self.truncation = TruncationModule(w_space_dim, self.num_layers)
        self.synthesis = SynthesisModule(resolution, w_space_dim, image_channels, fused_scale, fmaps_base, fmaps_max)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None, lod: float | None = None,
                w_moving_decay: float = 0.995, style_mixing_prob: float = 0.0,
                trunc_psi: float | None = None, trunc_layers: int | None = None,
                randomize_noise: bool = False, **_ignored) -> dict[str, torch.Tensor]:
        w = self.mapping(z, label)
        if self.training and w_moving_decay < 1.0:
            with torch.no_grad():
                batch_avg = w.detach().mean(dim=0)
                w_avg = self.truncation.w_avg
                w_avg.copy_(w_avg * w_moving_decay + batch_avg * (1 - w_moving_decay))
        wp = self.truncation(w)
        if self.training and style_mixing_prob > 0:
            wp = self.mix_styles(wp, z, lod, style_mixing_prob, label)
        wp = self.truncation(wp, trunc_psi, trunc_layers)
        image, styles = self.synthesis(wp, lod=lod, randomize_noise=randomize_noise, return_styles=True)
        return {"z": pixel_norm(z), "label": label, "w": w, "wp": wp, **styles, "image": image}

    def mix_styles(self, wp: torch.Tensor, z: torch.Tensor, lod: float | None, prob: float,
                   label: torch.Tensor | None = None) -> torch.Tensor:
        """With probability `prob`, layers from a random cut-off on take the styles of a second latent."""
        if torch.rand(()) >= prob:
            return wp
        lod = float(self.synthesis.lod) if lod is None else float(lod)
        current_layers = self.num_layers - 2 * int(lod)
        cut = int(torch.randint(1, current_layers, ()))
        wp_mix = self.truncation(self.mapping(torch.randn_like(z), label))
        wp = wp.clone()
        wp[:, cut:] = wp_mix[:, cut:]
        return wp
