"""The stand-in celeba256 weights: official layouts loaded strictly by the project's loaders, faces MTCNN finds,
FaceXFormer parse maps of the right shape, and a deterministic, skip-if-present build."""

import re
import time

import numpy as np
import pytest
import torch

from common.config import read_profile
from common.errors import PipelineError
from stylegan.checkpoint import load_discriminator, load_generator, read_checkpoint
from stylegan.stand_in import (
    build_stand_in_weights,
    load_source_generator,
    stand_in_generator_checkpoint,
    write_unless_present,
)

NUM_FACES = 16
MIN_DETECTION_RATE = 0.75
ARCH = dict(resolution=256, fmaps_base=16384, fmaps_max=512)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("stand_in")
    start = time.perf_counter()
    paths = build_stand_in_weights(root, seed=0)
    seconds = time.perf_counter() - start
    print(f"\nbuild: {seconds:.1f} s; " + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in paths))
    return root, paths


@pytest.fixture(scope="module")
def samples(built):
    """Stage 1's own path: the celeba256 [generator] config, build_generator, per-index latents."""
    from common.config import resolve_config
    from stylegan.generate import GeneratorConfig, build_generator, generate_images, image_latents

    config = resolve_config(GeneratorConfig, "generator", profile="celeba256", checkpoint=str(built[1][0]),
                            num_images=NUM_FACES)
    generator = build_generator(config, torch.device("cpu"))
    latents = image_latents(config, generator, range(NUM_FACES))
    images, _ = generate_images(generator, latents, config, torch.device("cpu"))
    return latents, images


def read_layout(path):
    rows = []
    for line in path.read_text().splitlines():
        name, shape = re.fullmatch(r"(\S+)  \(([\d, ]*)\)", line).groups()
        rows.append((name, tuple(int(s) for s in shape.split(", ") if s)))
    return rows


def test_paths_are_the_profiles(built):
    root, paths = built
    data = read_profile("celeba256")
    assert paths == [root / data["generator"]["checkpoint"], root / data["segmentation"]["checkpoint"]]
    assert all(p.is_file() for p in paths)


def test_stylegan_file_has_the_official_layout_and_loads_strictly(built, repo_root):
    path = built[1][0]
    state = read_checkpoint(path)
    assert list(state) == ["generator", "discriminator", "generator_smooth"]
    for entry, layout in (("generator", "stylegan_generator_256.keys.txt"),
                          ("generator_smooth", "stylegan_generator_256.keys.txt"),
                          ("discriminator", "stylegan_discriminator_256.keys.txt")):
        expected = read_layout(repo_root / "tests" / "data" / layout)
        assert [(k, tuple(v.shape)) for k, v in state[entry].items()] == expected, entry
        assert all(v.dtype == torch.float32 for v in state[entry].values()), entry
    for entry in ("generator", "generator_smooth"):
        generator = load_generator(path, entry, **ARCH)
        assert float(generator.synthesis.lod) == 2.0
    assert float(load_discriminator(path, **ARCH).lod) == 2.0


def test_fine_tuning_builds_v1_from_the_stand_in(built):
    from common.config import resolve_config
    from stylegan_modified.config import FineTuneConfig
    from stylegan_modified.models import build_models

    config = resolve_config(FineTuneConfig, "fine_tuning", profile="celeba256", init_checkpoint=str(built[1][0]))
    generator, discriminator = build_models(config)
    assert generator.resolution == discriminator.resolution == 256


def test_samples_are_the_bundled_faces_enlarged(samples):
    """The 256 px image of a z is the bundled 64 px generator's image of that z, nearest-upsampled x4."""
    latents, images = samples
    assert images.shape == (NUM_FACES, 256, 256, 3) and images.dtype == np.uint8
    source = load_source_generator()
    with torch.inference_mode():
        small = source.synthesis(source.truncation(source.mapping(torch.from_numpy(latents.z[:4]))))
    small = ((small.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1)
    enlarged = small.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2).numpy()
    assert np.abs(enlarged - images[:4].astype(np.float32)).max() <= 1.0


def test_mtcnn_finds_faces_in_most_samples(samples):
    from segmentation.face_detection import create_mtcnn, detect_largest_faces

    boxes = detect_largest_faces(create_mtcnn(), list(samples[1]), upscale_to=256)
    rate = sum(box is not None for box in boxes) / len(boxes)
    confident = sum(box is not None and box.probability >= 0.9 for box in boxes) / len(boxes)
    print(f"\nMTCNN detection rate on {len(boxes)} stand-in samples: {rate:.3f} (p >= 0.9: {confident:.3f})")
    assert rate >= MIN_DETECTION_RATE


def test_facexformer_loads_strictly_and_parses(built, samples):
    from segmentation.face_detection import crop_face, create_mtcnn, detect_largest_faces
    from segmentation.facexformer import CHECKPOINT_ENTRY, FaceXFormerParser

    path = built[1][1]
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert list(state) == [CHECKPOINT_ENTRY] and len(state[CHECKPOINT_ENTRY]) == 505
    parser = FaceXFormerParser(path, batch_size=2)
    images = samples[1][:2]
    boxes = detect_largest_faces(create_mtcnn(), list(images), upscale_to=256)
    crops = np.stack([crop_face(image, box.box if box else (64, 64, 192, 192)) for image, box in zip(images, boxes)])
    maps = parser.parse(crops)
    assert maps.shape == (2, 224, 224) and maps.dtype == np.uint8 and maps.max() <= 10


def test_rebuilding_the_same_seed_skips_and_other_seeds_differ(built):
    root, paths = built
    before = [p.stat().st_mtime_ns for p in paths]
    # The skip compares every tensor of the fresh build with the file: equal means deterministic.
    assert build_stand_in_weights(root, seed=0) == paths
    assert [p.stat().st_mtime_ns for p in paths] == before
    seed0, seed1 = stand_in_generator_checkpoint(0), stand_in_generator_checkpoint(1)
    assert not torch.equal(seed0["discriminator"]["layer0.weight"], seed1["discriminator"]["layer0.weight"])
    # The embedded face generator does not depend on the seed, only the unused 128 / 256 px blocks do.
    assert torch.equal(seed0["generator"]["synthesis.layer9.weight"], seed1["generator"]["synthesis.layer9.weight"])


def test_a_different_file_is_replaced_only_when_forced(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"generator": {"x": torch.zeros(2)}}, path)
    content = {"generator": {"x": torch.ones(2)}}
    with pytest.raises(PipelineError, match="force=True"):
        write_unless_present(path, content, force=False, what="StyleGAN checkpoint")
    assert write_unless_present(path, content, force=True, what="StyleGAN checkpoint")
    assert not write_unless_present(path, content, force=False, what="StyleGAN checkpoint")
    assert torch.equal(torch.load(path, weights_only=True)["generator"]["x"], torch.ones(2))
