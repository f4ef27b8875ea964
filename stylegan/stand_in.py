"""A stand-in for the celeba256 profile's downloaded weights, built in seconds from what the repository ships.

`build_stand_in_weights(root)` writes the two files the celeba256 profile loads - the GenForce StyleGAN
checkpoint ([generator] checkpoint) and the FaceXFormer checkpoint ([segmentation] checkpoint), both paths
read from configs/celeba256.toml - so that profile runs end to end without a download. Every tensor has the
official key, shape and dtype (float32), and the files load strictly through the project's own loaders.

Construction of the 256 px generator, and why
---------------------------------------------
The bundled 64 px generator (the embedded profile's checkpoint, entry `generator_smooth`) draws faces; the
stand-in is that generator embedded, exactly, in the 256 px architecture:

* the mapping network and `truncation.w_avg` are copied (both are z = w = 512, 8 layers: same shapes);
* the 4..64 px synthesis layers and toRGB layers are copied into the first channels of the wider 256 px
  layers (128 -> 512 channels at 4..32 px, 64 -> 256 at 64 px). Every other channel has zero weights, bias,
  noise strength and style, so it stays exactly 0 through the instance norm and adds nothing. The stored
  weights are rescaled by sqrt(wide fan-in / narrow fan-in) (exactly 2 here), because the equalised
  learning rate multiplies them by 1/sqrt(fan-in) at run time;
* the `lod` buffer of the synthesis network is set to 2 (log2(256 / 64)). GenForce stores this
  progressive-growing level in the checkpoint and the project's synthesis honours it: at lod 2 the 128 and
  256 px blocks are skipped and the 64 px image is upsampled x4 (nearest), which is exactly the state of a
  GenForce run that has grown to 64 px. The 128 / 256 px blocks hold seeded freshly initialised weights, as
  the not-yet-grown blocks of such a run do.

So each 256 px sample is the bundled generator's 64 px face for the same z, enlarged x4 (equal up to float
rounding), and MTCNN finds a face in most of them. Passing the image through the 128 / 256 px blocks instead
(lod 0) cannot be exact: every styled layer instance-normalises each channel per image, which erases the
per-image contrast and colour a pass-through would need to carry.

Both `generator` and `generator_smooth` hold the same embedded weights (the bundled EMA generator; the
celeba256 profile samples `generator`). The discriminator is the official 256 px layout with seeded random
weights and the same lod (2), as a progressive-growing snapshot has it. The FaceXFormer side is
segmentation/stand_in.py.

Skipping: a file that already holds exactly the tensors this seed builds is left alone; a file that differs
(for example the real downloaded checkpoint) is only replaced with `force=True`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from common.checkpoints import same_weights, save_weights
from common.config import read_profile, resolve_repo_path
from common.errors import PipelineError
from stylegan.checkpoint import read_checkpoint, select_entry
from stylegan.stylegan_discriminator import StyleGANDiscriminator
from stylegan.stylegan_generator import StyleGANGenerator, feature_maps

PROFILE = "celeba256"
SOURCE_PROFILE = "embedded"  # its [generator] names the bundled 64 px checkpoint and its architecture
SOURCE_ENTRY = "generator_smooth"
ARCHITECTURE_KEYS = ("resolution", "fmaps_base", "fmaps_max")


def _generator_section(profile: str) -> dict:
    section = read_profile(profile).get("generator", {})
    missing = [k for k in ("checkpoint", *ARCHITECTURE_KEYS) if k not in section]
    if missing:
        raise PipelineError(f"configs/{profile}.toml [generator] lacks {', '.join(missing)}")
    return section


def load_source_generator(profile: str = SOURCE_PROFILE) -> StyleGANGenerator:
    """The bundled 64 px generator (float32, eval mode), strictly loaded from the profile's checkpoint."""
    section = _generator_section(profile)
    path = resolve_repo_path(section["checkpoint"])
    state = select_entry(read_checkpoint(path), SOURCE_ENTRY, path)
    generator = StyleGANGenerator(**{k: section[k] for k in ARCHITECTURE_KEYS})
    generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return generator.eval()


def _embed_layer(wide: dict, narrow: dict, prefix: str, kind: str) -> None:
    """Copy one synthesis layer (or toRGB) of the narrow generator into the first channels of the wide one,
    in place; everything else of that layer becomes 0 (the blur kernels and the noise map stay as they are)."""
    for key in [k for k in wide if k.startswith(prefix)]:
        name, target = key[len(prefix):], wide[key]
        if name in ("blur.kernel", "apply_noise.noise"):
            if name == "apply_noise.noise":
                target.copy_(narrow[key])
            continue
        source = narrow[key].float()
        target.zero_()
        if name == "style.weight" or name == "style.bias":
            # rows: channels' scales, then their shifts
            wide_c, narrow_c = target.shape[0] // 2, source.shape[0] // 2
            target[:narrow_c] = source[:narrow_c]
            target[wide_c:wide_c + narrow_c] = source[narrow_c:]
        elif name == "weight" and source.ndim == 4:  # conv [out, in, k, k] or toRGB [3, in, 1, 1]
            out_c, in_c = source.shape[:2]
            # equalised lr: the stored weight is scaled by 1/sqrt(fan-in) at run time
            target[:out_c, :in_c] = source * math.sqrt(target.shape[1] / in_c)
        elif name in ("bias", "const", "apply_noise.weight"):
            index = (slice(None), slice(0, source.shape[1])) if name == "const" else slice(0, source.shape[0])
            target[index] = source
        else:
            raise PipelineError(f"stand-in generator: no embedding rule for {key} ({kind})")


def embed_generator(source: StyleGANGenerator, resolution: int, fmaps_base: int, fmaps_max: int,
                    seed: int = 0) -> StyleGANGenerator:
    """`source` (a lower-resolution generator) embedded in a `resolution` px generator: see the module docstring.
    The blocks above the source's resolution keep the seeded fresh initialisation and are skipped by the lod."""
    lod = int(math.log2(resolution)) - int(math.log2(source.resolution))
    if lod < 0:
        raise PipelineError(f"cannot embed a {source.resolution} px generator in a {resolution} px one")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wide = StyleGANGenerator(resolution, fmaps_base=fmaps_base, fmaps_max=fmaps_max)
    narrow_state = source.state_dict()
    wide_state = wide.state_dict()  # shares storage with `wide`: edited in place
    with torch.no_grad():
        for key, value in narrow_state.items():
            if not key.startswith("synthesis."):
                if wide_state[key].shape != value.shape:
                    raise PipelineError(f"stand-in generator: {key} is {tuple(value.shape)} in the source, "
                                        f"{tuple(wide_state[key].shape)} in the target (mapping / w sizes differ)")
                wide_state[key].copy_(value)
        for block in range(source.synthesis.num_blocks):
            res = 4 << block
            if feature_maps(res, fmaps_base, fmaps_max) < getattr(source.synthesis, f"output{block}").weight.shape[1]:
                raise PipelineError(f"stand-in generator: the target is narrower than the source at {res} px")
            for layer in (f"layer{2 * block}", f"layer{2 * block + 1}"):
                _embed_layer(wide_state, narrow_state, f"synthesis.{layer}.", layer)
            _embed_layer(wide_state, narrow_state, f"synthesis.output{block}.", "toRGB")
        wide.synthesis.lod.fill_(float(lod))
    return wide.eval()


def stand_in_generator_checkpoint(seed: int = 0, profile: str = PROFILE) -> dict[str, dict[str, torch.Tensor]]:
    """The flat GenForce {generator, discriminator, generator_smooth} dict of the stand-in, float32, for
    the profile's [generator] architecture."""
    arch = {k: _generator_section(profile)[k] for k in ARCHITECTURE_KEYS}
    generator = embed_generator(load_source_generator(), seed=seed, **arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        discriminator = StyleGANDiscriminator(arch["resolution"], fmaps_base=arch["fmaps_base"],
                                              fmaps_max=arch["fmaps_max"])
    discriminator.lod.fill_(generator.synthesis.lod.item())
    g_state = {k: v.detach().clone().contiguous() for k, v in generator.state_dict().items()}
    return {"generator": g_state,
            "discriminator": {k: v.detach().contiguous() for k, v in discriminator.state_dict().items()},
            "generator_smooth": {k: v.clone() for k, v in g_state.items()}}


# --- writing -----------------------------------------------------------------------------------------

def holds(path: Path, content: dict) -> bool:
    """Whether `path` is a weights file with exactly `content`'s keys and tensors (False if unreadable)."""
    return same_weights(path, content)


def write_unless_present(path: Path, content: dict, force: bool, what: str) -> bool:
    """Write `content` atomically unless `path` already holds it; True when written. A different file
    at `path` (a real checkpoint, say) is replaced only with `force`."""
    if path.exists() and not force:
        if holds(path, content):
            return False
        raise PipelineError(f"{path} exists and is not the stand-in {what} (a downloaded checkpoint?); "
                            f"move it away or build with force=True to replace it")
    save_weights(path, content)
    return True


def stand_in_paths(root: str | Path, profile: str = PROFILE) -> tuple[Path, Path]:
    """(StyleGAN checkpoint, FaceXFormer checkpoint) under `root`, at the paths the profile's config names."""
    data = read_profile(profile)
    try:
        generator_path, parser_path = data["generator"]["checkpoint"], data["segmentation"]["checkpoint"]
    except KeyError as exc:
        raise PipelineError(f"configs/{profile}.toml names no {exc.args[0]} checkpoint") from None
    return Path(root) / generator_path, Path(root) / parser_path


def build_stand_in_weights(root: str | Path, seed: int = 0, force: bool = False,
                           profile: str = PROFILE) -> list[Path]:
    """Write the stand-in StyleGAN and FaceXFormer checkpoints under `root` (the paths of configs/<profile>.toml,
    relative to `root`); returns both paths. Deterministic for a seed; files already holding that content are
    skipped; a different existing file raises PipelineError unless `force`."""
    from segmentation.stand_in import stand_in_facexformer_checkpoint

    generator_path, parser_path = stand_in_paths(root, profile)
    write_unless_present(generator_path, stand_in_generator_checkpoint(seed, profile), force, "StyleGAN checkpoint")
    write_unless_present(parser_path, stand_in_facexformer_checkpoint(seed), force, "FaceXFormer checkpoint")
    return [generator_path, parser_path]
