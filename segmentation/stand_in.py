"""A FaceXFormer checkpoint with seeded random weights, in the release checkpoint's layout.

The file is `{"state_dict_backbone": <505 tensors>}`, float32, exactly the keys and shapes
`load_facexformer` loads strictly, so the celeba256 profile's segmentation stage runs without the
download. The weights are the module's own seeded initialisation, not trained ones: the parse maps
it produces are noise, but every shape, file and code path is the real one. Written by
`stylegan.stand_in.build_stand_in_weights` together with the stand-in StyleGAN checkpoint.
"""

from __future__ import annotations

import torch

from segmentation.facexformer import CHECKPOINT_ENTRY, FaceXFormer


def stand_in_facexformer_checkpoint(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """{CHECKPOINT_ENTRY: state_dict} of a FaceXFormer initialised from `seed` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FaceXFormer()
    return {CHECKPOINT_ENTRY: {k: v.detach().contiguous() for k, v in model.state_dict().items()}}
