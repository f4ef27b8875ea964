"""The 64x64 DCGAN face generator shipped in PyPI `gan-face-generate` (MIT, trained on DigiFace-1M).

It is the teacher of the embedded profile's StyleGAN and a source of test faces. Only the
weight file is taken from the package (its own code pulls wandb and more); the network is
the PyTorch-tutorial DCGAN generator written here: nz=100, ngf=64, input [N, 100, 1, 1],
tanh output [N, 3, 64, 64] in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from common.checkpoints import load_state_strict, read_weights
from common.errors import PipelineError
from common.packages import NO_DEPS_NOTE, packaged_file

NOISE_DIM = 100
RESOLUTION = 64


class DCGANGenerator(nn.Module):
    def __init__(self, noise_dim: int = NOISE_DIM, base_channels: int = 64, image_channels: int = 3):
        super().__init__()
        widths = [base_channels * 8, base_channels * 4, base_channels * 2, base_channels]
        layers: list[nn.Module] = [nn.ConvTranspose2d(noise_dim, widths[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], image_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        if noise.ndim == 2:
            noise = noise[:, :, None, None]
        return self.main(noise)


def teacher_weights_path() -> Path:
    return packaged_file("gan_face_generate", "gan-face-generate", "weights.tar", NO_DEPS_NOTE)


def load_teacher(device: str | torch.device = "cpu") -> DCGANGenerator:
    """The pretrained teacher in eval mode (BatchNorm uses its running statistics)."""
    path = teacher_weights_path()
    checkpoint = read_weights(path, "reinstall gan-face-generate with `make install`")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("netG_state_dict"), dict):
        raise PipelineError(f"{path}: has no 'netG_state_dict' entry; reinstall gan-face-generate with `make install`")
    model = DCGANGenerator()
    load_state_strict(model, checkpoint["netG_state_dict"], f"{path} [netG_state_dict]")
    return model.to(device).eval().requires_grad_(False)


@torch.inference_mode()
def sample_teacher_images(num: int, seed: int, batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
    """`num` teacher faces [num, 3, 64, 64] in [-1, 1], reproducible from `seed`."""
    teacher = load_teacher(device)
    noise = torch.randn(num, NOISE_DIM, generator=torch.Generator().manual_seed(seed))
    return torch.cat([teacher(chunk.to(device)).cpu() for chunk in noise.split(batch_size)])
