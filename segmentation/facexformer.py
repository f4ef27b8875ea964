"""FaceXFormer (Narayan et al., 2024), written from its published architecture and the official checkpoint's key layout.

Its state_dict has exactly the layout of the official release checkpoint's `state_dict_backbone`
entry (505 entries), so `load_facexformer` can load `ckpts/model.pt` strictly. Oh-LoRA uses only
the face-parsing output (11 LaPa classes, see PARSING_CLASSES); the other heads are kept so the
checkpoint loads and the model is complete.

Data flow: Swin-B feature stages -> four NHWC taps -> per-scale projection to 256 channels,
resized to the first tap's grid and fused (deepest scale first) -> two-way transformer between 18
task tokens and the image tokens -> per-task MLP heads and a hypernetwork mask decoder.
Differences from the reference code: nothing is downloaded at construction, no forward hooks
(the stage outputs are collected in `forward` itself, so the module is re-entrant), and the
unused final norm / pooling of the backbone are not evaluated (their parameters still exist).
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import swin_b

from common import artifacts
from common.errors import PipelineError

INPUT_SIZE = 224
EMBED_DIM = 256
STAGE_WIDTHS = (128, 256, 512, 1024)
# Indices of the Swin stages inside `features`; 2, 4 and 6 are the patch-merging layers between them.
STAGE_INDICES = (1, 3, 5, 7)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PARSING_CLASSES = ("background", "skin", "left eyebrow", "right eyebrow", "left eye", "right eye",
                   "nose", "upper lip", "inner mouth", "lower lip", "hair")

OUTPUT_NAMES = ("landmark", "headpose", "attribute", "visibility", "age", "gender", "race", "seg")
TASK_PARSING, TASK_LANDMARKS, TASK_HEADPOSE, TASK_ATTRIBUTES, TASK_AGE_GENDER_RACE, TASK_VISIBILITY = range(6)
# For each element of the output tuple, the task id whose batch rows it keeps.
OUTPUT_TASKS = (TASK_LANDMARKS, TASK_HEADPOSE, TASK_ATTRIBUTES, TASK_VISIBILITY,
                TASK_AGE_GENDER_RACE, TASK_AGE_GENDER_RACE, TASK_AGE_GENDER_RACE, TASK_PARSING)
SEG_OUTPUT = OUTPUT_NAMES.index("seg")

CHECKPOINT_ENTRY = "state_dict_backbone"
DEFAULT_CHECKPOINT = Path(artifacts.FACEXFORMER_CHECKPOINT)
CHECKPOINT_SOURCE = ("the FaceXFormer release checkpoint ckpts/model.pt from the Hugging Face model page "
                     "kartiknarayan/facexformer (https://huggingface.co/kartiknarayan/facexformer)")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map, with its own eps of 1e-6 (1e-5 everywhere else)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        variance = centred.pow(2).mean(dim=1, keepdim=True)
        normalised = centred / torch.sqrt(variance + self.eps)
        return self.weight[:, None, None] * normalised + self.bias[:, None, None]


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections may narrow the width (downsample_rate) before the heads split."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide the attention width {internal_dim}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        return x.reshape(batch, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        query = self._split_heads(self.q_proj(q))
        key = self._split_heads(self.k_proj(k))
        value = self._split_heads(self.v_proj(v))
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
        mixed = torch.softmax(scores, dim=-1) @ value
        batch, _, tokens, _ = mixed.shape
        return self.out_proj(mixed.transpose(1, 2).reshape(batch, tokens, -1))


class MLPBlock(nn.Module):
    """The decoder's feed-forward layer: lin1 -> ReLU -> lin2."""

    def __init__(self, embedding_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, tokens->image, token MLP, image->tokens; a LayerNorm after each residual.

    The first block of the decoder (`first_block=True`) uses no positional code in its self-attention
    and *replaces* the tokens by the attention output instead of adding it.
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int, downsample_rate: int,
                 first_block: bool) -> None:
        super().__init__()
        # Registration order fixes the state_dict order of the release checkpoint.
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, downsample_rate)
        self.first_block = first_block

    def attend_tokens_to_tokens(self, queries: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        if self.first_block:
            return self.norm1(self.self_attn(queries, queries, queries))
        with_pe = queries + query_pe
        return self.norm1(queries + self.self_attn(with_pe, with_pe, queries))

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self.attend_tokens_to_tokens(queries, query_pe)

        keys_with_pe = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys_with_pe, keys))

        queries = self.norm3(queries + self.mlp(queries))

        keys = self.norm4(keys + self.cross_attn_image_to_token(keys_with_pe, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """SAM-style decoder: `depth` two-way blocks, then a last tokens->image attention."""

    def __init__(self, depth: int = 2, embedding_dim: int = EMBED_DIM, num_heads: int = 8, mlp_dim: int = 2048,
                 downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, downsample_rate, first_block=(index == 0))
            for index in range(depth))
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding [B,C,H,W], image_pe [1 or B,C,H,W], tokens [B,N,C] -> (tokens [B,N,C], image [B,HW,C])."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        # The task tokens double as their own positional code.
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attended = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attended), keys


class MLP(nn.Module):
    """`num_layers` Linear layers with ReLU between them and nothing after the last."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class FaceDecoder(nn.Module):
    """18 task tokens (7 single-task tokens, then 11 parsing-class tokens) decoded against the image tokens."""

    HEAD_SIZES = {"landmarks": 136, "pose": 3, "attribute": 40, "visibility": 29, "age": 8, "gender": 2, "race": 5}

    def __init__(self, dim: int = EMBED_DIM, num_mask_tokens: int = len(PARSING_CLASSES)) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(embedding_dim=dim)
        self.landmarks_token = nn.Embedding(1, dim)
        self.pose_token = nn.Embedding(1, dim)
        self.attribute_token = nn.Embedding(1, dim)
        self.visibility_token = nn.Embedding(1, dim)
        self.age_token = nn.Embedding(1, dim)
        self.gender_token = nn.Embedding(1, dim)
        self.race_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetwork_mlps = MLP(dim, dim, dim // 8)
        self.landmarks_prediction_head = MLP(dim, dim, self.HEAD_SIZES["landmarks"])
        self.pose_prediction_head = MLP(dim, dim, self.HEAD_SIZES["pose"])
        self.attribute_prediction_head = MLP(dim, dim, self.HEAD_SIZES["attribute"])
        self.visibility_prediction_head = MLP(dim, dim, self.HEAD_SIZES["visibility"])
        self.age_prediction_head = MLP(dim, dim, self.HEAD_SIZES["age"])
        self.gender_prediction_head = MLP(dim, dim, self.HEAD_SIZES["gender"])
        self.race_prediction_head = MLP(dim, dim, self.HEAD_SIZES["race"])

    def task_tokens(self) -> torch.Tensor:
        """[18, dim] in the decoder's fixed order."""
        return torch.cat([self.landmarks_token.weight, self.pose_token.weight, self.attribute_token.weight,
                          self.visibility_token.weight, self.age_token.weight, self.gender_token.weight,
                          self.race_token.weight, self.mask_tokens.weight], dim=0)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch, channels, height, width = image_embedding.shape
        tokens = self.task_tokens().unsqueeze(0).expand(batch, -1, -1)
        decoded, image_tokens = self.transformer(image_embedding, image_pe, tokens)

        heads = (self.landmarks_prediction_head, self.pose_prediction_head, self.attribute_prediction_head,
                 self.visibility_prediction_head, self.age_prediction_head, self.gender_prediction_head,
                 self.race_prediction_head)
        task_outputs = tuple(head(decoded[:, index]) for index, head in enumerate(heads))

        image_grid = image_tokens.transpose(1, 2).reshape(batch, channels, height, width)
        upscaled = self.output_upscaling(image_grid)
        mask_weights = self.output_hypernetwork_mlps(decoded[:, len(heads):])
        _, up_channels, up_height, up_width = upscaled.shape
        seg = (mask_weights @ upscaled.reshape(batch, up_channels, up_height * up_width))
        return task_outputs + (seg.reshape(batch, -1, up_height, up_width),)


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional code of a grid; the [2, F] frequency matrix is a checkpoint buffer."""

    def __init__(self, num_pos_feats: int = EMBED_DIM // 2) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def forward(self, height: int, width: int) -> torch.Tensor:
        """[2F, height, width]: sin then cos of 2*pi * ((2*(x, y) - 1) @ matrix), cell centres, x first."""
        matrix = self.positional_encoding_gaussian_matrix
        rows = (torch.arange(height, dtype=matrix.dtype, device=matrix.device) + 0.5) / height
        cols = (torch.arange(width, dtype=matrix.dtype, device=matrix.device) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
        coords = torch.stack([grid_x, grid_y], dim=-1)
        phases = (2 * coords - 1) @ matrix
        phases = 2 * math.pi * phases
        return torch.cat([torch.sin(phases), torch.cos(phases)], dim=-1).permute(2, 0, 1)


class ScaleProjection(nn.Module):
    """Linear map of one backbone stage's channels to the decoder width (key `linear_c.<i>.proj`)."""

    def __init__(self, input_dim: int, output_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, output_dim)

    def forward(self, stage_map: torch.Tensor) -> torch.Tensor:
        """NHWC stage map -> NCHW projected map."""
        batch, height, width, channels = stage_map.shape
        projected = self.proj(stage_map.reshape(batch, height * width, channels))
        return projected.transpose(1, 2).reshape(batch, -1, height, width)


class FaceXFormer(nn.Module):
    """Swin-B backbone + multi-scale fusion + two-way task-token decoder; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        swin = swin_b(weights=None)
        # features, norm, permute, avgpool, flatten: the checkpoint holds these, without the classifier.
        self.backbone = nn.Sequential(*(module for name, module in swin.named_children() if name != "head"))
        self.pe_layer = PositionEmbeddingRandom(EMBED_DIM // 2)
        self.face_decoder = FaceDecoder(EMBED_DIM)
        self.linear_c = nn.ModuleList(ScaleProjection(width, EMBED_DIM) for width in STAGE_WIDTHS)
        self.linear_fuse = nn.Conv2d(EMBED_DIM * len(STAGE_WIDTHS), EMBED_DIM, kernel_size=1, bias=False)

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four NHWC stage outputs (before the backbone's final norm), shallowest first."""
        features = self.backbone[0]
        taps = []
        for index, layer in enumerate(features):
            x = layer(x)
            if index in STAGE_INDICES:
                taps.append(x)
        return taps

    def fuse(self, stage_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Project every scale to 256 channels on the first scale's grid; concatenate deepest first; 1x1 conv."""
        target_size = tuple(stage_maps[0].shape[1:3])
        resized = [F.interpolate(projection(stage_map), size=target_size, mode="bilinear", align_corners=False)
                   for stage_map, projection in zip(stage_maps, self.linear_c)]
        return self.linear_fuse(torch.cat(resized[::-1], dim=1))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All eight outputs for every batch row, in OUTPUT_NAMES order (no task selection)."""
        embedding = self.fuse(self.stage_outputs(x))
        image_pe = self.pe_layer(embedding.shape[2], embedding.shape[3]).unsqueeze(0)
        return self.face_decoder(embedding, image_pe)

    def forward(self, x: torch.Tensor, labels: object, tasks: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, ...]:
        """The 8-tuple (landmark, headpose, attribute, visibility, age, gender, race, seg), each output keeping
        only the rows whose task id selects it. `labels` is accepted for the reference call signature and ignored."""
        return select_task_rows(self.forward_all(x), tasks)


def select_task_rows(outputs: Sequence[torch.Tensor], tasks: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Keep, in each output, the batch rows whose task id is the one that output belongs to (OUTPUT_TASKS)."""
    tasks = torch.as_tensor(tasks, device=outputs[0].device)
    if tasks.ndim != 1 or tasks.shape[0] != outputs[0].shape[0]:
        raise ValueError(f"tasks must be one id per batch row ({outputs[0].shape[0]}), got shape {tuple(tasks.shape)}")
    return tuple(output[tasks == task_id] for output, task_id in zip(outputs, OUTPUT_TASKS))


def _preview(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def describe_layout_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, object]) -> str:
    """'' when `found` has exactly the keys and shapes of `expected`, else a one-line summary of the differences."""
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    wrong_shape = []
    for name, tensor in expected.items():
        value = found.get(name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            wrong_shape.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif value.shape != tensor.shape:
            wrong_shape.append(f"{name} {tuple(value.shape)} instead of {tuple(tensor.shape)}")
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {_preview(wrong_shape)}")
    return "; ".join(problems)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _weights_only_reason(exc: pickle.UnpicklingError) -> str:
    """torch's own reason inside its long weights-only error, e.g. 'Unsupported global: GLOBAL io.open ...'."""
    match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
    return match.group(1).strip()[:160] if match else _first_line(exc)


def load_facexformer(path: str | Path, device: str | torch.device = "cpu") -> FaceXFormer:
    """FaceXFormer with the `state_dict_backbone` entry of the release checkpoint at `path`, strict, in eval mode."""
    path = Path(path)
    if not path.is_file():
        where = f"save it as {path}"
        if path != DEFAULT_CHECKPOINT:
            where += f" (the default location is {DEFAULT_CHECKPOINT})"
        raise PipelineError(f"FaceXFormer checkpoint {path} not found: download {CHECKPOINT_SOURCE} and {where}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _weights_only_reason(exc)
        if reason.startswith("Unsupported global"):
            raise PipelineError(f"{path} holds pickled Python objects or code, which the weights-only load refuses "
                                f"({reason}); use {CHECKPOINT_SOURCE}") from None
        raise PipelineError(f"cannot read {path} as a torch checkpoint ({reason}); use {CHECKPOINT_SOURCE}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise PipelineError(f"cannot read {path} as a torch checkpoint ({_first_line(exc)}); "
                            f"use {CHECKPOINT_SOURCE}") from None
    if not isinstance(checkpoint, Mapping) or CHECKPOINT_ENTRY not in checkpoint:
        if isinstance(checkpoint, Mapping):
            top_level = _preview([str(key) for key in checkpoint])
        else:
            top_level = f"a {type(checkpoint).__name__}"
        raise PipelineError(f"{path} has no '{CHECKPOINT_ENTRY}' entry (found: {top_level}); "
                            f"expected {CHECKPOINT_SOURCE}")
    state = checkpoint[CHECKPOINT_ENTRY]
    if not isinstance(state, Mapping):
        raise PipelineError(f"{path}: '{CHECKPOINT_ENTRY}' is a {type(state).__name__}, not a state_dict")
    # Built on the meta device: every parameter and buffer comes from the checkpoint, so random
    # initialisation of the 92M parameters would be wasted time.
    with torch.device("meta"):
        model = FaceXFormer()
    mismatch = describe_layout_mismatch(model.state_dict(), state)
    if mismatch:
        raise PipelineError(f"{path} does not have the FaceXFormer layout ({mismatch}); expected {CHECKPOINT_SOURCE}")
    model.load_state_dict(state, strict=True, assign=True)
    # assign=True keeps the file's dtypes; the model computes in float32 (integer index buffers stay as they are).
    return model.float().to(device).eval()


class FaceXFormerParser:
    """Face parsing of 224x224 face crops with the FaceXFormer release checkpoint (task 0, 11 classes)."""

    def __init__(self, checkpoint_path: str | Path, device: str | torch.device = "cpu", batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = load_facexformer(checkpoint_path, self.device)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def parse(self, crops: np.ndarray) -> np.ndarray:
        """[N,224,224,3] uint8 RGB crops -> [N,224,224] uint8 class maps (values 0..10, see PARSING_CLASSES)."""
        if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.ndim != 4 \
                or crops.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            shape = getattr(crops, "shape", None)
            dtype = getattr(crops, "dtype", type(crops).__name__)
            raise ValueError(f"expected [N,{INPUT_SIZE},{INPUT_SIZE},3] uint8 crops, got shape {shape} dtype {dtype}")
        class_maps = np.empty(crops.shape[:3], dtype=np.uint8)
        for start in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(crops[start:start + self.batch_size])).to(self.device)
            # ToTensor scaling to [0, 1], then the ImageNet normalisation the model was trained with.
            images = (batch.permute(0, 3, 1, 2).float().div(255) - self._mean) / self._std
            tasks = torch.full((len(batch),), TASK_PARSING, dtype=torch.long, device=self.device)
            logits = self.model(images, None, tasks)[SEG_OUTPUT]
            classes = torch.softmax(logits, dim=1).argmax(dim=1)
            class_maps[start:start + len(batch)] = classes.to(torch.uint8).cpu().numpy()
        return class_maps
