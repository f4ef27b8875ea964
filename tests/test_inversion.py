"""w-space projection (stylegan/inversion.py) on a tiny random generator with known answers."""

import pytest
import torch

from stylegan.inversion import project_to_w
from stylegan.stylegan_generator import StyleGANGenerator


def tiny_generator() -> StyleGANGenerator:
    torch.manual_seed(0)
    return StyleGANGenerator(resolution=16, fmaps_base=256, fmaps_max=16, mapping_layers=2).eval()


def test_projection_recovers_an_image_the_generator_can_draw(one_torch_thread):
    generator = tiny_generator()
    with torch.no_grad():
        w_true = generator.mapping(torch.randn(3, 512))
        targets = generator.synthesis(generator.truncation(w_true))
        w_start = generator.mapping(torch.randn(3, 512))
        start_error = (generator.synthesis(generator.truncation(w_start)) - targets).abs().flatten(1).mean(dim=1)
    w, error = project_to_w(generator, targets, init_w=w_start, steps=150, lr=0.05)
    assert w.shape == (3, 512) and error.shape == (3,)
    assert (error < 0.3 * start_error).all(), (error, start_error)
    # The generator is left as it was: eval mode, trainable, no gradients accumulated.
    assert not generator.training
    assert all(p.requires_grad and p.grad is None for p in generator.parameters())


def test_projection_starts_from_the_average_w_and_checks_shapes(one_torch_thread):
    generator = tiny_generator()
    targets = torch.zeros(2, 3, 16, 16)
    w, _ = project_to_w(generator, targets, steps=0)
    assert torch.equal(w, generator.truncation.w_avg.expand(2, -1))
    with pytest.raises(ValueError, match="init_w"):
        project_to_w(generator, targets, init_w=torch.zeros(3, 512), steps=1)
    with pytest.raises(ValueError, match="targets"):
        project_to_w(generator, targets[0], steps=1)
