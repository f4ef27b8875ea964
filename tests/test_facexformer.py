"""FaceXFormer: checkpoint layout, loading, task selection, the parser, and the pieces strict loading cannot see.

Full 224 px forwards are expensive on CPU, so only two single-image ones happen (the module fixture
and the parser); the remaining model-level checks run at 64 px, which the Swin backbone and the
decoder accept too, and the parser's batching is checked with a recording stand-in model.
"""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.errors import PipelineError
from segmentation.facexformer import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Attention,
    FaceXFormer,
    FaceXFormerParser,
    LayerNorm2d,
    PositionEmbeddingRandom,
    describe_layout_mismatch,
    load_facexformer,
    select_task_rows,
)

# Written out from the official checkpoint's layout, not taken from the module, so a mix-up there fails here.
HEAD_WIDTHS = {"landmark": 136, "headpose": 3, "attribute": 40, "visibility": 29, "age": 8, "gender": 2, "race": 5}
TASK_OF_OUTPUT = {"landmark": 1, "headpose": 2, "attribute": 3, "visibility": 5, "age": 4, "gender": 4, "race": 4,
                  "seg": 0}
OUTPUT_ORDER = ("landmark", "headpose", "attribute", "visibility", "age", "gender", "race", "seg")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FaceXFormer().eval()


@pytest.fixture(scope="module")
def checkpoint_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("facexformer") / "segmentation_model.pt"
    torch.save({"state_dict_backbone": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def crop():
    # A smooth random colour field rather than pure noise, closer to what a face crop looks like.
    rng = np.random.default_rng(7)
    coarse = rng.uniform(0, 255, size=(1, 3, 7, 7)).astype(np.float32)
    smooth = F.interpolate(torch.from_numpy(coarse), size=(224, 224), mode="bicubic", align_corners=False)
    return smooth.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def normalise(crops: np.ndarray) -> torch.Tensor:
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    return (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def full_size_outputs(model, crop):
    with torch.inference_mode():
        return model.forward_all(normalise(crop))


@pytest.fixture(scope="module")
def parser(checkpoint_path):
    return FaceXFormerParser(checkpoint_path, batch_size=2)


def small_batch(batch_size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_state_dict_layout_equals_release_checkpoint(model, repo_root):
    expected = []
    for line in (repo_root / "tests/data/facexformer.keys.txt").read_text().splitlines():
        match = re.fullmatch(r"(\S+)  \(([\d, ]+)\)(  int64)?", line)
        assert match, line
        shape = tuple(int(size) for size in match.group(2).split(", "))
        expected.append((match.group(1), shape, torch.int64 if match.group(3) else torch.float32))
    actual = [(name, tuple(tensor.shape), tensor.dtype) for name, tensor in model.state_dict().items()]
    assert len(expected) == 505
    assert actual == expected


def test_parameter_count_and_no_hooks(model):
    assert sum(p.numel() for p in model.parameters()) == 91_985_943
    # Stage outputs are collected in forward; hooks that store state on the module would not be re-entrant.
    assert not any(module._forward_hooks for module in model.modules())


def test_all_heads_at_full_size(full_size_outputs):
    for name, output in zip(OUTPUT_ORDER, full_size_outputs):
        expected = (1, 11, 224, 224) if name == "seg" else (1, HEAD_WIDTHS[name])
        assert tuple(output.shape) == expected, name
        assert torch.isfinite(output).all(), name


def test_forward_keeps_each_outputs_task_rows(model):
    tasks = [3, 0, 5, 1, 4, 2, 0, 4]
    images = small_batch(len(tasks))
    with torch.inference_mode():
        every_row = model.forward_all(images)
        selected = model(images, {"ignored": True}, torch.tensor(tasks))
    assert tuple(every_row[7].shape) == (len(tasks), 11, 64, 64)
    for name, output, full, listed in zip(OUTPUT_ORDER, selected, every_row, select_task_rows(every_row, tasks)):
        rows = [row for row, task in enumerate(tasks) if task == TASK_OF_OUTPUT[name]]
        expected_shape = (len(rows), 11, 64, 64) if name == "seg" else (len(rows), HEAD_WIDTHS[name])
        assert tuple(output.shape) == expected_shape, name
        torch.testing.assert_close(output, full[rows], rtol=0, atol=1e-5)
        assert torch.equal(listed, full[rows]), name
    with pytest.raises(ValueError, match="one id per batch row"):
        select_task_rows(every_row, torch.tensor([0, 1]))


def test_load_facexformer_reproduces_the_saved_model(model, checkpoint_path):
    loaded = load_facexformer(checkpoint_path)
    assert not loaded.training
    for (name, original), (loaded_name, restored) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == loaded_name and torch.equal(original, restored), name
    images = small_batch(2, seed=3)
    tasks = torch.tensor([0, 4])
    with torch.inference_mode():
        expected, actual = model(images, None, tasks), loaded(images, None, tasks)
    for name, want, got in zip(OUTPUT_ORDER, expected, actual):
        assert torch.equal(want, got), name


def test_parser_matches_the_model(parser, crop, full_size_outputs):
    class_map = parser.parse(crop)
    assert class_map.dtype == np.uint8 and class_map.shape == (1, 224, 224)
    assert class_map.max() <= 10
    expected = torch.softmax(full_size_outputs[7], dim=1).argmax(dim=1).numpy()
    # Same weights and input; allow only for a rounding-level near-tie flipping a pixel.
    assert (class_map == expected).mean() > 0.999


class RecordingParsingModel(torch.nn.Module):
    """Stands in for FaceXFormer: records its inputs and 'parses' every pixel as (red value % 11)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, images, labels, tasks):
        self.calls.append((images.clone(), tasks.clone()))
        red = (images[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255
        classes = red.round().long() % 11
        logits = F.one_hot(classes, 11).permute(0, 3, 1, 2).float() * 4
        return (None,) * 7 + (logits,)


def test_parser_normalises_batches_and_keeps_order(parser, monkeypatch):
    crops = np.random.default_rng(3).integers(0, 256, size=(5, 224, 224, 3), dtype=np.uint8)
    recorder = RecordingParsingModel()
    monkeypatch.setattr(parser, "model", recorder)
    class_maps = parser.parse(crops)
    assert [len(images) for images, _ in recorder.calls] == [2, 2, 1]
    assert all(torch.equal(tasks, torch.zeros(len(tasks), dtype=torch.long)) for _, tasks in recorder.calls)
    received = torch.cat([images for images, _ in recorder.calls])
    torch.testing.assert_close(received, normalise(crops), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(class_maps, crops[..., 0] % 11)
    assert class_maps.dtype == np.uint8
    assert parser.parse(crops[:0]).shape == (0, 224, 224)
    with pytest.raises(ValueError, match="uint8"):
        parser.parse(crops.astype(np.float32))
    with pytest.raises(ValueError, match="224"):
        parser.parse(crops[:, :112])


def assert_one_line_mentioning(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    path = tmp_path / "segmentation_model.pt"
    with pytest.raises(PipelineError) as error:
        load_facexformer(path)
    assert_one_line_mentioning(error, str(path), "kartiknarayan/facexformer", "ckpts/model.pt",
                               "segmentation/models/segmentation_model.pt")
    with pytest.raises(PipelineError) as error:
        FaceXFormerParser(path)
    assert_one_line_mentioning(error, str(path))


def test_wrong_layout_names_the_keys(tmp_path):
    path = tmp_path / "other_model.pt"
    torch.save({"state_dict_backbone": {"backbone.0.0.0.weight": torch.zeros(128, 3, 4, 4),
                                        "decoder.extra.weight": torch.zeros(2)}}, path)
    with pytest.raises(PipelineError) as error:
        load_facexformer(path)
    assert_one_line_mentioning(error, str(path), "missing keys: backbone.0.0.0.bias", "504 in all",
                               "unexpected keys: decoder.extra.weight")

    torch.save({"state_dict": {}}, path)
    with pytest.raises(PipelineError) as error:
        load_facexformer(path)
    assert_one_line_mentioning(error, str(path), "state_dict_backbone", "found: state_dict")

    path.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError) as error:
        load_facexformer(path)
    assert_one_line_mentioning(error, str(path), "cannot read")


def test_describe_layout_mismatch_reports_missing_unexpected_and_shapes(model):
    expected = model.state_dict()
    assert describe_layout_mismatch(expected, dict(expected)) == ""
    found = dict(expected)
    del found["linear_fuse.weight"]
    found["linear_fuse.bias"] = torch.zeros(256)
    found["pe_layer.positional_encoding_gaussian_matrix"] = torch.zeros(128, 2)
    report = describe_layout_mismatch(expected, found)
    assert "missing keys: linear_fuse.weight" in report
    assert "unexpected keys: linear_fuse.bias" in report
    assert "pe_layer.positional_encoding_gaussian_matrix (128, 2) instead of (2, 128)" in report


class RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickled_code_is_refused_without_running_it(tmp_path):
    path = tmp_path / "segmentation_model.pt"
    marker = tmp_path / "code_ran"
    torch.save({"state_dict_backbone": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(PipelineError) as error:
        load_facexformer(path)
    assert_one_line_mentioning(error, str(path), "weights-only")
    assert not marker.exists()


def test_layernorm2d_normalises_channels_with_eps_1e6(model):
    assert isinstance(model.face_decoder.output_upscaling[1], LayerNorm2d)
    norm = LayerNorm2d(3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 3.0, 4.0]))
        norm.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    # Per pixel the channels are offset + (-d, 0, d): channel variance 2d^2/3 = 1e-6, same size as eps.
    spread = 1e-3 * math.sqrt(1.5)
    offsets = torch.randn(2, 1, 4, 5, dtype=torch.float64)
    x = offsets + spread * torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64).view(1, 3, 1, 1)
    unit = spread / math.sqrt(1e-6 + 1e-6)
    expected = torch.tensor([2.0 * -unit + 0.5, -1.0, 4.0 * unit], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected.expand(2, 3, 4, 5), rtol=0, atol=1e-9)


def test_positional_encoding_against_hand_computation(model):
    matrix = [[0.3, -0.7], [0.2, 0.5]]
    layer = PositionEmbeddingRandom(2)
    layer.positional_encoding_gaussian_matrix.copy_(torch.tensor(matrix))
    height, width = 2, 3
    encoding = layer(height, width)
    assert tuple(encoding.shape) == (4, height, width)
    for row in range(height):
        for col in range(width):
            x, y = 2 * (col + 0.5) / width - 1, 2 * (row + 0.5) / height - 1
            phases = [2 * math.pi * (x * matrix[0][k] + y * matrix[1][k]) for k in range(2)]
            expected = [math.sin(p) for p in phases] + [math.cos(p) for p in phases]
            torch.testing.assert_close(encoding[:, row, col], torch.tensor(expected), rtol=0, atol=1e-6)
    assert tuple(model.pe_layer(56, 56).shape) == (256, 56, 56)


def test_patch_merging_takes_subgrids_in_torchvision_order(model):
    merging = model.backbone[0][2]
    x = torch.randn(1, 4, 4, 128)
    concatenated = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(merging(x), merging.reduction(merging.norm(concatenated)))


def test_fusion_concatenates_the_deepest_scale_first(model):
    generator = torch.Generator().manual_seed(5)
    maps = [torch.randn(1, 8 >> i, 8 >> i, width, generator=generator) for i, width in enumerate((128, 256, 512, 1024))]
    with torch.no_grad():
        fused = model.fuse(maps)
        resized = []
        for stage_map, projection in zip(maps, model.linear_c):
            grid = projection.proj(stage_map).permute(0, 3, 1, 2)
            resized.append(F.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False))
        weight = model.linear_fuse.weight[:, :, 0, 0]
        expected = sum(torch.einsum("oc,bchw->bohw", weight[:, 256 * block:256 * (block + 1)], resized[3 - block])
                       for block in range(4))
    assert tuple(fused.shape) == (1, 256, 8, 8)
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-4)


def test_first_decoder_self_attention_has_no_residual_and_no_pe(model):
    first, second = model.face_decoder.transformer.layers
    generator = torch.Generator().manual_seed(9)
    queries, query_pe = torch.randn(2, 18, 256, generator=generator), torch.randn(2, 18, 256, generator=generator)
    with torch.no_grad():
        replaced = first.norm1(first.self_attn(queries, queries, queries))
        torch.testing.assert_close(first.attend_tokens_to_tokens(queries, query_pe), replaced)
        with_pe = queries + query_pe
        added = second.norm1(queries + second.self_attn(with_pe, with_pe, queries))
        torch.testing.assert_close(second.attend_tokens_to_tokens(queries, query_pe), added)


def test_attention_against_hand_computation():
    torch.manual_seed(11)
    attention = Attention(embedding_dim=8, num_heads=2, downsample_rate=2)
    q, k, v = torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    with torch.no_grad():
        projected_q, projected_k, projected_v = attention.q_proj(q), attention.k_proj(k), attention.v_proj(v)
        heads = []
        for head in range(2):
            columns = slice(2 * head, 2 * head + 2)
            scores = projected_q[0, :, columns] @ projected_k[0, :, columns].T / math.sqrt(2)
            heads.append(torch.softmax(scores, dim=-1) @ projected_v[0, :, columns])
        expected = attention.out_proj(torch.cat(heads, dim=-1)).unsqueeze(0)
        torch.testing.assert_close(attention(q, k, v), expected)
