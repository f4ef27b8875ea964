"""The property-score CNNs of stage 5 (the original's 7-output and hairstyle CNNs), as a function of the image resolution.

Every model takes the whole image as floats in [-1, 1] ([N, 3, R, R]; `to_model_input` makes them from
uint8), crops internally and returns one row of scores per image. Branch conventions are those of
stage 2: 3x3 convs, stride 1, no padding, each followed by LeakyReLU(0.01) and channel dropout 0.05;
"P" = 2x2 max pool; FC1 = Linear -> tanh -> dropout; the heads are plain Linear layers.

Module names are the original's, so a state dict saved by the original code (256 px) loads strictly:
`{eyes|mouth|pose|hair_color|hair_length|background}_score_cnn.conv{k}.0.*`, `.fc1.0.*`, `.fc_final.*`
for the 7-output model; `bottom_{left|right}_cnn.conv{k}.0.*`, `fc1.0.*`, `fc_final.*` for the hairstyle
model; the merged model is the 7-output one plus `hairstyle_score_cnn.*`.

Crops are the original's at 256 px and scale with the resolution (every bound is a multiple of 1/64 of the
side, so 128 px takes exactly half of each), except at 64 px, the embedded profile's size, where the eyes,
mouth and pose crops are placed on the faces this project's 64 px generator draws (the original's boxes, scaled,
cut the lower half of our mouths and see one eye line only; bounds from the 2nd-98th percentiles of 68
landmarks on 100 generated faces plus a margin). Smaller images are never upsampled; instead each halving of
the resolution drops one conv + pool block, so most branches' final feature map keeps the original's spatial
size. Shapes with width_multiplier 1 (crop rows x cols -> plan -> flattened features):

| branch       | crop at 256          | 256 px plan                      | 64 px crop            | 64 px plan          | 64 px features |
|--------------|----------------------|----------------------------------|-----------------------|---------------------|----------------|
| eyes         | [96,144) x [64,192)  | 32 64 P 64 P 128 P               | [22,38) x [8,56)      | 32 64 P             | 64 x 6 x 22    |
| mouth        | [160,208) x [96,160) | 32 64 P 64 P 128 P               | [42,62) x [14,50)     | 32 64 P             | 64 x 8 x 16    |
| pose         | [112,160) x [88,168) | 32 64 P 64 P 128 128             | [14,62) x [0,64)      | 32 64 P 128 P       | 128 x 10 x 14  |
| hair colour  | whole image          | 32 64 P 64 P 128 P 128 P 128 P   | 64 x 64               | 32 64 P 128 P 128 P | 128 x 6 x 6    |
| hair length  | [128,256) x all      | 32 64 P 64 P 128 P 128 P 128     | 32 x 64               | 32 64 P 128 P 128   | 128 x 4 x 12   |
| background   | [0,128) x all        | same as hair length (2 outputs)  | 32 x 64               | 32 64 P 128 P 128   | 128 x 4 x 12   |
| hairstyle L  | [128,256) x [0,96)   | 32 64 P 64 P 96 P 128 128        | 32 x 24               | 32 64 P 128 128     | 128 x 10 x 6   |
| hairstyle R  | [128,256) x [160,256)| same                             | 32 x 24               | same                | 128 x 10 x 6   |

The 64 px pose crop is the whole face width: the embedded profile's pose is the head's yaw (see
segmentation/face_geometry.py), which shows in where the nose sits between the cheeks.
(C = the last conv's channels: 128 at 256 px, 64 for the 64 px eyes and mouth branches.) FC1 is 256
wide (dropout 0.45) in the 7-output model; the hairstyle model concatenates its two branches into
FC1 512 (dropout 0.25). `width_multiplier` scales every conv's channel count (FC widths stay); the
embedded profile uses it to train in minutes on two CPU cores.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from common.errors import PipelineError

# Output order of the merged model; the 7-output model gives the first seven.
PROPERTY_NAMES = ("eyes", "hair_color", "hair_length", "mouth", "pose", "background_mean", "background_std",
                  "hairstyle")
SEVEN_NAMES = PROPERTY_NAMES[:7]
ORIGINAL_RESOLUTION = 256
SUPPORTED_RESOLUTIONS = (64, 128, 256)
CONV_DROPOUT = 0.05
LEAKY_SLOPE = 0.01
SEVEN_FC_WIDTH, SEVEN_FC_DROPOUT = 256, 0.45
HAIRSTYLE_FC_WIDTH, HAIRSTYLE_FC_DROPOUT = 512, 0.25

# (row_start, row_end, col_start, col_end) at 256 px.
CROPS_256 = {
    "eyes": (96, 144, 64, 192),
    "mouth": (160, 208, 96, 160),
    "pose": (112, 160, 88, 168),
    "hair_color": (0, 256, 0, 256),
    "hair_length": (128, 256, 0, 256),
    "background": (0, 128, 0, 256),
    "bottom_left": (128, 256, 0, 96),
    "bottom_right": (128, 256, 160, 256),
}
# (row_start, row_end, col_start, col_end) at 64 px where they differ from CROPS_256 / 4 (see the table above).
CROPS_64 = {
    "eyes": (22, 38, 8, 56),
    "mouth": (42, 62, 14, 50),
    "pose": (14, 62, 0, 64),
}

_SHORT_STACK = {256: "32 64 P 64 P 128 P", 128: "32 64 P 128 P", 64: "32 64 P"}
_LOWER_HALF_STACK = {256: "32 64 P 64 P 128 P 128 P 128", 128: "32 64 P 128 P 128 P 128", 64: "32 64 P 128 P 128"}
_HAIRSTYLE_STACK = {256: "32 64 P 64 P 96 P 128 128", 128: "32 64 P 96 P 128 128", 64: "32 64 P 128 128"}
CONV_PLANS = {
    "eyes": _SHORT_STACK,
    "mouth": _SHORT_STACK,
    "pose": {256: "32 64 P 64 P 128 128", 128: "32 64 P 128 128", 64: "32 64 P 128 P"},
    "hair_color": {256: "32 64 P 64 P 128 P 128 P 128 P", 128: "32 64 P 128 P 128 P 128 P", 64: "32 64 P 128 P 128 P"},
    "hair_length": _LOWER_HALF_STACK,
    "background": _LOWER_HALF_STACK,
    "bottom_left": _HAIRSTYLE_STACK,
    "bottom_right": _HAIRSTYLE_STACK,
}
# The 7-output model's branches in output order, with their number of outputs.
SEVEN_BRANCHES = (("eyes", 1), ("hair_color", 1), ("hair_length", 1), ("mouth", 1), ("pose", 1), ("background", 2))


def check_resolution(resolution: int) -> int:
    if resolution not in SUPPORTED_RESOLUTIONS:
        raise PipelineError(f"property CNN resolution {resolution} is not supported; use one of "
                            f"{', '.join(map(str, SUPPORTED_RESOLUTIONS))}")
    return resolution


def crop_window(branch: str, resolution: int) -> tuple[int, int, int, int]:
    """(row_start, row_end, col_start, col_end) the branch looks at, in pixels of an R x R image."""
    check_resolution(resolution)
    if resolution == 64 and branch in CROPS_64:
        return CROPS_64[branch]
    return tuple(v * resolution // ORIGINAL_RESOLUTION for v in CROPS_256[branch])


def conv_plan(branch: str, resolution: int) -> list[int | str]:
    """The branch's layer plan before width scaling: conv channel counts and "P" for a pool."""
    check_resolution(resolution)
    return [item if item == "P" else int(item) for item in CONV_PLANS[branch][resolution].split()]


def scaled_channels(channels: int, width_multiplier: float) -> int:
    return max(1, int(round(channels * width_multiplier)))


def to_model_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """[N, 3, R, R] uint8 -> float32 in [-1, 1], per channel (x / 255 - 0.5) / 0.5 as the original, in
    channels-last memory order (the CPU convolutions of these small stacks run about 1.3-2x faster so; the
    values are the same)."""
    return images_uint8.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


def channels_last(model: nn.Module) -> nn.Module:
    """The model with its conv weights in the memory order `to_model_input` produces."""
    return model.to(memory_format=torch.channels_last)


class BranchCNN(nn.Module):
    """One crop's conv stack (conv1..convK, pools between them), optionally with FC1 and its head."""

    def __init__(self, branch: str, resolution: int, width_multiplier: float = 1.0,
                 fc_width: int | None = None, fc_dropout: float = 0.0, outputs: int = 0):
        super().__init__()
        self.branch = branch
        self.resolution = resolution
        self.output_names = (branch,) * outputs
        self.window = crop_window(branch, resolution)
        height, width = self.window[1] - self.window[0], self.window[3] - self.window[2]
        in_channels, conv_no, pool_no = 3, 0, 0
        self.stack: list[str] = []
        for item in conv_plan(branch, resolution):
            if item == "P":
                pool_no += 1
                name = f"pool{pool_no}"
                self.add_module(name, nn.MaxPool2d(2, 2))
                height, width = height // 2, width // 2
            else:
                conv_no += 1
                name = f"conv{conv_no}"
                out_channels = scaled_channels(item, width_multiplier)
                # In place: a conv's backward needs its input, not its output, and inference skips a copy.
                self.add_module(name, nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3),
                                                    nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
                                                    nn.Dropout2d(CONV_DROPOUT)))
                in_channels, height, width = out_channels, height - 2, width - 2
            self.stack.append(name)
        if height < 1 or width < 1:
            raise ValueError(f"{branch} plan at {resolution} px leaves no features")
        self.feature_shape = (in_channels, height, width)
        self.num_features = in_channels * height * width
        if fc_width is not None:
            self.fc1 = nn.Sequential(nn.Linear(self.num_features, fc_width), nn.Tanh(), nn.Dropout(fc_dropout))
            self.fc_final = nn.Linear(fc_width, outputs)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Crop, conv stack, flatten: [N, 3, R, R] -> [N, num_features]."""
        r0, r1, c0, c1 = self.window
        x = images[:, :, r0:r1, c0:c1]
        for name in self.stack:
            x = getattr(self, name)(x)
        return x.flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc_final(self.fc1(self.features(images)))


def _initialise(model: nn.Module) -> None:
    """He init for the LeakyReLU convs, Xavier for FC1 and the heads, zero biases. With PyTorch's
    default init the signal shrinks at every conv and training needs many epochs to get going, which the
    embedded profile's epoch cap cannot afford (the same reason as stage 2's CNNs)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Sequential) and isinstance(module[0], nn.Linear):  # FC1 -> tanh
            # Gain 1, not tanh's 5/3: FC1 sees thousands of max-pooled features, and the larger gain
            # saturates the tanh from the start (a branch then outputs a constant).
            nn.init.xavier_uniform_(module[0].weight)
            nn.init.zeros_(module[0].bias)
    for module in model.modules():
        if isinstance(module, (BranchCNN, HairstyleScoreCNN)) and hasattr(module, "fc_final"):
            nn.init.xavier_uniform_(module.fc_final.weight)
            nn.init.zeros_(module.fc_final.bias)


def _check_input(images: torch.Tensor, resolution: int, what: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (resolution, resolution):
        raise ValueError(f"{what} expects [N, 3, {resolution}, {resolution}] images, got {tuple(images.shape)}")


class PropertyScoreCNN(nn.Module):
    """The 7-output CNN of section 5a: [N, 3, R, R] in [-1, 1] -> [N, 7] (SEVEN_NAMES order)."""

    output_names = SEVEN_NAMES

    def __init__(self, resolution: int, width_multiplier: float = 1.0):
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.width_multiplier = width_multiplier
        for branch, outputs in SEVEN_BRANCHES:
            self.add_module(f"{branch}_score_cnn", BranchCNN(branch, resolution, width_multiplier,
                                                            SEVEN_FC_WIDTH, SEVEN_FC_DROPOUT, outputs))
        _initialise(self)

    def seven_scores(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"{branch}_score_cnn")(images) for branch, _ in SEVEN_BRANCHES], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_input(images, self.resolution, "property CNN")
        return self.seven_scores(images)


class HairstyleScoreCNN(nn.Module):
    """The hairstyle CNN of section 5b: two bottom branches -> FC1 512 -> [N, 1]."""

    output_names = ("hairstyle",)

    def __init__(self, resolution: int, width_multiplier: float = 1.0):
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.width_multiplier = width_multiplier
        self.bottom_left_cnn = BranchCNN("bottom_left", resolution, width_multiplier)
        self.bottom_right_cnn = BranchCNN("bottom_right", resolution, width_multiplier)
        features = self.bottom_left_cnn.num_features + self.bottom_right_cnn.num_features
        self.fc1 = nn.Sequential(nn.Linear(features, HAIRSTYLE_FC_WIDTH), nn.Tanh(), nn.Dropout(HAIRSTYLE_FC_DROPOUT))
        self.fc_final = nn.Linear(HAIRSTYLE_FC_WIDTH, 1)
        _initialise(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_input(images, self.resolution, "hairstyle CNN")
        both = torch.cat([self.bottom_left_cnn.features(images), self.bottom_right_cnn.features(images)], dim=1)
        return self.fc_final(self.fc1(both))


class MergedPropertyScoreCNN(PropertyScoreCNN):
    """The 8-output CNN of section 5b: the 7-output model's branches plus the hairstyle CNN at index 7."""

    output_names = PROPERTY_NAMES

    def __init__(self, resolution: int, width_multiplier: float = 1.0, hairstyle_width_multiplier: float = 1.0):
        super().__init__(resolution, width_multiplier)
        self.hairstyle_score_cnn = HairstyleScoreCNN(resolution, hairstyle_width_multiplier)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_input(images, self.resolution, "merged property CNN")
        return torch.cat([self.seven_scores(images), self.hairstyle_score_cnn(images)], dim=1)


def merge_models(seven: PropertyScoreCNN, hairstyle: HairstyleScoreCNN) -> MergedPropertyScoreCNN:
    """An 8-output model holding copies of both models' weights (no training), in eval mode."""
    if seven.resolution != hairstyle.resolution:
        raise PipelineError(f"cannot merge a {seven.resolution} px property CNN with a {hairstyle.resolution} px "
                            f"hairstyle CNN; train both with the same profile")
    merged = MergedPropertyScoreCNN(seven.resolution, seven.width_multiplier, hairstyle.width_multiplier)
    state = {k: v for k, v in seven.state_dict().items()}
    state.update({f"hairstyle_score_cnn.{k}": v for k, v in hairstyle.state_dict().items()})
    merged.load_state_dict(state, strict=True)
    return merged.eval()


MODEL_KINDS = {"seven": PropertyScoreCNN, "hairstyle": HairstyleScoreCNN, "merged": MergedPropertyScoreCNN}


def build_model(kind: str, resolution: int, width_multiplier: float = 1.0,
                hairstyle_width_multiplier: float = 1.0) -> nn.Module:
    if kind == "merged":
        return MergedPropertyScoreCNN(resolution, width_multiplier, hairstyle_width_multiplier)
    if kind not in MODEL_KINDS:
        raise PipelineError(f"unknown property CNN kind '{kind}'; choose one of {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind](resolution, width_multiplier)
