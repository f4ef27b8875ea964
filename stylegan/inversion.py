"""Project images into a StyleGAN's w space by optimisation (GAN inversion).

Given target images, find one w per image (shared by every synthesis layer, as the mapping
network produces it) whose rendering is closest to the target, starting from a given w (e.g.
the mapping's output for a paired latent) or from the generator's average w. Used to tell how
much of a distilled student's error is its mapping (z -> w) and how much its synthesis
(w -> image): if an optimised w renders the target far better than mapping(z) does, the
synthesis can draw the face and the mapping is what falls short.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from stylegan.distillation import multiscale_l1


@contextmanager
def _frozen(module: nn.Module):
    """No parameter gradients and eval mode for the duration; both restored afterwards."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    module.requires_grad_(False).eval()
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        module.train(was_training)


def project_to_w(generator: nn.Module, targets: torch.Tensor, init_w: torch.Tensor | None = None,
                 steps: int = 100, lr: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimise w [N, w_dim] (Adam, multi-scale L1) so that synthesis(w) matches `targets` [N, 3, H, W].

    Returns the final w and the per-image L1 (mean absolute error in [-1, 1] units) of its rendering.
    Images are optimised independently (the loss is a sum of per-image terms and Adam works per
    element), so one image's result does not depend on the others in the batch.
    """
    if targets.ndim != 4:
        raise ValueError(f"targets must be [N, C, H, W], got {list(targets.shape)}")
    if init_w is None:
        init_w = generator.truncation.w_avg.expand(len(targets), -1)
    if init_w.shape != (len(targets), generator.w_space_dim):
        raise ValueError(f"init_w must be [{len(targets)}, {generator.w_space_dim}], got {list(init_w.shape)}")
    targets = targets.detach()
    w = init_w.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    with _frozen(generator), torch.enable_grad():
        for _ in range(steps):
            image = generator.synthesis(generator.truncation(w))  # psi 1: w repeated for every layer
            # Scaled by N so that each image's gradient does not shrink with the batch size.
            loss = multiscale_l1(image, targets) * len(targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            image = generator.synthesis(generator.truncation(w))
    errors = (image - targets).abs().flatten(1).mean(dim=1)
    return w.detach(), errors
