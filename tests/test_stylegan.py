"""The GenForce-compatible StyleGAN: layout, maths, checkpoint I/O and loading."""

import math
import pickle
import re

import pytest
import torch
import torch.nn.functional as F

from common.errors import PipelineError
from stylegan.checkpoint import load_discriminator, load_generator, read_checkpoint, save_checkpoint
from stylegan.stylegan_discriminator import StyleGANDiscriminator, minibatch_stddev
from stylegan.stylegan_generator import StyleGANGenerator, StyledLayer, blur_kernel

SMALL = dict(z_space_dim=64, w_space_dim=64, mapping_fmaps=64, fmaps_base=1024, fmaps_max=64)


def read_layout(path):
    rows = []
    for line in path.read_text().splitlines():
        name, shape = line.split("  ", 1)
        dtype = torch.int64 if "int64" in shape else torch.float32
        rows.append((name.strip(), tuple(int(v) for v in re.findall(r"\d+", shape.replace("int64", ""))), dtype))
    return rows


@pytest.mark.parametrize("cls, layout", [(StyleGANGenerator, "stylegan_generator_256.keys.txt"),
                                         (StyleGANDiscriminator, "stylegan_discriminator_256.keys.txt")])
def test_official_layout_matches_checkpoint_keys(repo_root, cls, layout):
    expected = read_layout(repo_root / "tests" / "data" / layout)
    got = [(k, tuple(v.shape), v.dtype) for k, v in cls(256).state_dict().items()]
    assert got == expected


def test_parameter_counts_match_official_models():
    assert sum(p.numel() for p in StyleGANGenerator(256).parameters()) == 26_086_229
    assert sum(p.numel() for p in StyleGANDiscriminator(256).parameters()) == 23_052_353


def randomize(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not name.startswith("mapping."):  # mapping weights keep their 1/lr_mul-scaled init
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


def test_mapping_is_pixel_norm_then_equalised_dense_layers():
    g = randomize(StyleGANGenerator(16, **SMALL)).eval()
    z = torch.randn(3, 64)
    x = z / torch.sqrt(z.square().mean(1, keepdim=True) + 1e-8)
    for i in range(8):
        layer = getattr(g.mapping, f"dense{i}")
        scale = math.sqrt(2) / math.sqrt(64) * 0.01
        x = F.leaky_relu(x @ (layer.weight * scale).T + layer.bias * 0.01, 0.2)
    torch.testing.assert_close(g.mapping(z), x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("psi, layers", [(0.7, 8), (0.5, 10)])
def test_truncation_pulls_first_layers_towards_w_avg(psi, layers):
    g = StyleGANGenerator(64, **SMALL).eval()  # 10 synthesis layers
    g.truncation.w_avg.normal_()
    w = torch.randn(2, 64)
    wp = g.truncation(w, trunc_psi=psi, trunc_layers=layers)
    expected_truncated = g.truncation.w_avg + psi * (w - g.truncation.w_avg)
    torch.testing.assert_close(wp[:, :layers], expected_truncated.unsqueeze(1).expand(-1, layers, -1))
    torch.testing.assert_close(wp[:, layers:], w.unsqueeze(1).expand(-1, 10 - layers, -1))
    # psi 1 or 0 layers: no truncation at all.
    assert torch.equal(g.truncation(w, 1.0, 8), g.truncation(w, 0.5, 0))


def test_eval_forward_is_deterministic_and_training_updates_w_avg_only():
    g = randomize(StyleGANGenerator(32, **SMALL))
    z = torch.randn(4, 64)
    g.eval()
    out1, out2 = g(z), g(z)
    assert torch.equal(out1["image"], out2["image"])
    assert set(out1) >= {"z", "w", "wp", "image", "style00"}
    assert out1["image"].shape == (4, 3, 32, 32) and out1["wp"].shape == (4, 8, 64)
    g.train()
    before = g.truncation.w_avg.clone()
    out3 = g(z)  # no style mixing unless asked for
    assert torch.equal(out3["wp"], out1["wp"])
    expected_avg = before * 0.995 + out1["w"].mean(0) * 0.005
    torch.testing.assert_close(g.truncation.w_avg, expected_avg)


def test_style_mixing_replaces_layers_after_a_cut_when_asked():
    g = randomize(StyleGANGenerator(32, **SMALL)).train()
    torch.manual_seed(0)
    out = g(torch.randn(2, 64), style_mixing_prob=1.0)
    wp, w = out["wp"], out["w"]
    same = (wp == w.unsqueeze(1)).all(dim=2).all(dim=0)  # layers that kept the first latent
    cut = int(same.logical_not().nonzero()[0])
    assert 1 <= cut < 8 and same[:cut].all() and not same[cut:].any()


def test_fused_and_nonfused_upsampling_give_different_but_valid_images():
    torch.manual_seed(0)
    fused = randomize(StyleGANGenerator(64, fused_scale=True, **SMALL)).eval()
    plain = StyleGANGenerator(64, fused_scale=False, **SMALL).eval()
    plain.load_state_dict(fused.state_dict())  # same keys: the choice is not in the checkpoint
    z = torch.randn(2, 64)
    a, b = fused(z)["image"], plain(z)["image"]
    assert a.shape == b.shape == (2, 3, 64, 64) and torch.isfinite(a).all()
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("res", [8, 64])
def test_upsample_layer_equals_nearest_upsampling_then_conv_then_blur(res):
    torch.manual_seed(0)
    layer = StyledLayer("upsample", 16, 8, res, 32)
    x = torch.randn(3, 16, res // 2, res // 2)
    weight = layer.weight * layer.wscale
    literal = layer.blur(F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, padding=1))
    fast = layer.convolve(x)
    torch.testing.assert_close(fast, literal, rtol=1e-5, atol=1e-5)
    # the same on the channels-last layout inference uses
    torch.testing.assert_close(layer.convolve(x.contiguous(memory_format=torch.channels_last)), literal,
                               rtol=1e-5, atol=1e-5)


def test_lod_one_outputs_the_upsampled_lower_resolution_image():
    g = randomize(StyleGANGenerator(32, **SMALL)).eval()
    image = g(torch.randn(2, 64), lod=1.0)["image"]
    torch.testing.assert_close(image, F.interpolate(image[:, :, ::2, ::2], scale_factor=2.0, mode="nearest"))


def test_blur_kernel_is_normalised_binomial():
    k = blur_kernel(2)
    assert k.shape == (2, 1, 3, 3) and float(k[0, 0, 1, 1]) == 0.25 and float(k[0, 0, 0, 0]) == 0.0625
    assert torch.allclose(k.sum(dim=(2, 3)), torch.ones(2, 1))


def test_minibatch_stddev_groups_samples_m_plus_k_times_m():
    x = torch.zeros(4, 2, 1, 1)
    x[0], x[2] = 1.0, 3.0  # group m=0 is samples {0, 2}: std 1; group m=1 is {1, 3}: std 0
    out = minibatch_stddev(x, group_size=2)
    assert out.shape == (4, 3, 1, 1)
    torch.testing.assert_close(out[:, 2].flatten(), torch.tensor([1.0, 1e-4, 1.0, 1e-4]), atol=1e-4, rtol=0)


def test_discriminator_scores_and_rejects_wrong_shapes():
    d = randomize(StyleGANDiscriminator(64, fmaps_base=1024, fmaps_max=64)).eval()
    score = d(torch.randn(4, 3, 64, 64))
    assert score.shape == (4, 1) and torch.isfinite(score).all()
    with pytest.raises(ValueError, match="shape"):
        d(torch.randn(4, 3, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        d(torch.randn(6, 3, 64, 64))


def test_checkpoint_round_trip_is_strict_and_exact(tmp_path):
    g = randomize(StyleGANGenerator(32, **SMALL), 1)
    d = randomize(StyleGANDiscriminator(32, fmaps_base=1024, fmaps_max=64), 2)
    g_ema = randomize(StyleGANGenerator(32, **SMALL), 3)
    path = tmp_path / "model.pth"
    save_checkpoint(path, g, d, g_ema)
    assert set(read_checkpoint(path)) == {"generator", "discriminator", "generator_smooth"}
    z = torch.randn(2, 64)
    for entry, source in (("generator", g), ("generator_smooth", g_ema)):
        loaded = load_generator(path, entry, resolution=32, **SMALL)
        assert torch.equal(loaded(z)["image"], source.eval()(z)["image"])
    loaded_d = load_discriminator(path, resolution=32, fmaps_base=1024, fmaps_max=64)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded_d(x), d.eval()(x))


def test_float16_export_loads_into_float32_model(tmp_path):
    g = randomize(StyleGANGenerator(16, **SMALL))
    save_checkpoint(tmp_path / "half.pth", generator=g, dtype=torch.float16)
    loaded = load_generator(tmp_path / "half.pth", resolution=16, **SMALL)
    assert loaded.mapping.dense0.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.mapping.dense0.weight, g.mapping.dense0.weight, atol=1e-2, rtol=1e-3)


def test_wrong_layout_names_the_differing_keys(tmp_path):
    save_checkpoint(tmp_path / "m.pth", generator=StyleGANGenerator(16, **SMALL))
    with pytest.raises(PipelineError, match=r"m\.pth.*(missing|unexpected).*synthesis\.layer"):
        load_generator(tmp_path / "m.pth", resolution=32, **SMALL)
    with pytest.raises(PipelineError, match="generator_smooth"):
        load_generator(tmp_path / "m.pth", "generator_smooth", resolution=16, **SMALL)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_carries_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"generator": {"x": torch.zeros(1)}, "payload": _RunsCode()}, path)
    with pytest.raises(PipelineError, match="evil.pth.*refused"):
        read_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


def test_missing_and_corrupt_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="not found; get it here"):
        read_checkpoint(tmp_path / "none.pth", missing_hint="get it here")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="bad.pth: not a readable"):
        read_checkpoint(tmp_path / "bad.pth")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(PipelineError, match="not a GenForce"):
        read_checkpoint(tmp_path / "other.pth")
    with open(tmp_path / "raw.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(PipelineError):
        read_checkpoint(tmp_path / "raw.pkl")
