"""Label-conditioned generator / discriminator layouts (the Oh-LoRA v3 conditional layout)."""

import pytest
import torch

from stylegan.stylegan_discriminator import StyleGANDiscriminator
from stylegan.stylegan_generator import StyleGANGenerator

TINY = dict(z_space_dim=32, w_space_dim=32, mapping_layers=2, mapping_fmaps=32, fmaps_base=256, fmaps_max=32)


def test_conditional_generator_layout_and_label_effect():
    torch.manual_seed(0)
    g = StyleGANGenerator(16, label_size=7, **TINY).eval()
    sd = g.state_dict()
    assert tuple(sd["mapping.label_weight"].shape) == (7, 16)
    assert tuple(sd["mapping.dense0.weight"].shape) == (32, 32 + 16)
    z = torch.randn(3, 32)
    label_a, label_b = torch.zeros(3, 7), torch.ones(3, 7)
    w_a = g.mapping(z, label_a)
    assert w_a.shape == (3, 32)
    assert not torch.equal(w_a, g.mapping(z, label_b))
    assert g(z, label_a)["image"].shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="label must have shape"):
        g.mapping(z, None)


def test_label_size_zero_keeps_the_unconditioned_keys_and_outputs():
    torch.manual_seed(1)
    g = StyleGANGenerator(16, **TINY).eval()
    assert "mapping.label_weight" not in g.state_dict()
    assert tuple(g.state_dict()["mapping.dense0.weight"].shape) == (32, 32)
    z = torch.randn(2, 32)
    assert torch.equal(g.mapping(z), g.mapping(z, None))
    with pytest.raises(ValueError, match="no label"):
        g.mapping(z, torch.zeros(2, 7))


def test_conditional_discriminator_concatenates_label_before_last_dense():
    torch.manual_seed(2)
    d = StyleGANDiscriminator(16, label_size=7, minibatch_std_group_size=16, fmaps_base=256, fmaps_max=32).eval()
    last = f"layer{2 * d.num_blocks}.weight"
    assert tuple(d.state_dict()[last].shape) == (1, 32 + 7)
    image = torch.randn(4, 3, 16, 16)
    score_a = d(image, torch.zeros(4, 7))
    assert score_a.shape == (4, 1)
    assert not torch.equal(score_a, d(image, torch.ones(4, 7)))
    d0 = StyleGANDiscriminator(16, fmaps_base=256, fmaps_max=32)
    assert tuple(d0.state_dict()[last].shape) == (1, 32)
