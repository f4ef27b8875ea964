"""The embedded face parser (face mesh + iris landmarks, colour models for hair/skin/background).

Real inputs: teacher (DCGAN) faces, cropped by MTCNN as the segmentation stage does.
"""

import numpy as np
import pytest
import torch

from common.images import to_uint8
from segmentation import mesh_parser as mp
from segmentation.face_detection import create_mtcnn, crop_face, detect_largest_faces
from stylegan.teacher_dcgan import sample_teacher_images

NUM_FACES = 6


@pytest.fixture(scope="module")
def parser():
    return mp.MeshFaceParser(num_threads=1)


@pytest.fixture(scope="module")
def teacher_crops():
    torch.set_num_threads(1)
    images = to_uint8(sample_teacher_images(NUM_FACES + 4, seed=11))
    boxes = detect_largest_faces(create_mtcnn("cpu"), list(images), upscale_to=256)
    crops = [crop_face(image, box.box) for image, box in zip(images, boxes) if box is not None]
    assert len(crops) >= NUM_FACES, "MTCNN should find most teacher faces"
    return np.stack(crops[:NUM_FACES])


@pytest.fixture(scope="module")
def parsed(parser, teacher_crops):
    return [parser.parse_one(crop) for crop in teacher_crops]


def centroid(class_map: np.ndarray, classes) -> np.ndarray:
    ys, xs = np.nonzero(np.isin(class_map, classes))
    assert len(xs), f"classes {classes} missing"
    return np.array([xs.mean(), ys.mean()])


def test_parse_returns_uint8_maps_with_the_eleven_classes(parser, teacher_crops):
    maps = parser.parse(teacher_crops[:2])
    assert maps.shape == (2, 224, 224) and maps.dtype == np.uint8
    assert maps.max() <= 10
    # Every class appears (the inner mouth only where the mouth is open).
    for class_map in maps:
        assert set(np.unique(class_map)) >= set(range(11)) - {mp.INNER_MOUTH}


def test_parse_matches_parse_one_and_is_deterministic(parser, teacher_crops, parsed):
    maps = parser.parse(teacher_crops[:3])
    for class_map, one in zip(maps, parsed[:3]):
        np.testing.assert_array_equal(class_map, one.class_map)


def test_the_mesh_finds_the_teacher_faces(parsed):
    scores = np.array([p.face_score for p in parsed])
    assert (scores > 0.5).mean() >= 0.8
    for p in parsed:
        assert p.landmarks.shape == (468, 2)
        assert np.all((p.landmarks > -20) & (p.landmarks < 244))


def test_classes_sit_where_faces_have_them(parsed):
    for p in parsed:
        m = p.class_map
        left_eye, right_eye = centroid(m, [mp.LEFT_EYE]), centroid(m, [mp.RIGHT_EYE])
        left_brow, right_brow = centroid(m, [mp.LEFT_BROW]), centroid(m, [mp.RIGHT_BROW])
        nose, mouth = centroid(m, [mp.NOSE]), centroid(m, [mp.UPPER_LIP, mp.INNER_MOUTH, mp.LOWER_LIP])
        # Class 4 is the image-left eye, 5 the image-right one; both in the upper half of the face.
        assert left_eye[0] < right_eye[0]
        skin_rows = np.nonzero((m == mp.SKIN).any(axis=1))[0]
        face_middle = (skin_rows.min() + skin_rows.max()) / 2
        assert left_eye[1] < face_middle and right_eye[1] < face_middle
        assert max(left_eye[1], right_eye[1]) < 0.6 * 224
        assert left_brow[0] < right_brow[0]
        assert left_brow[1] < left_eye[1] and right_brow[1] < right_eye[1]
        assert nose[1] > min(left_eye[1], right_eye[1])
        assert mouth[1] > nose[1]
        assert centroid(m, [mp.UPPER_LIP])[1] < centroid(m, [mp.LOWER_LIP])[1]
        counts = np.bincount(m.ravel(), minlength=11)
        assert counts[mp.SKIN] > counts[2:10].max(), "skin is the largest face class"
        if counts[mp.HAIR]:
            hair_ys = np.nonzero(m == mp.HAIR)[0]
            assert hair_ys.min() < min(left_brow[1], right_brow[1]), "hair reaches above the brows"


def test_left_and_right_swap_on_a_mirrored_face(parser, teacher_crops, parsed):
    """The mirrored face's image-left eye is the original's image-right eye, mirrored."""
    original = parsed[0].class_map
    mirrored = parser.parse_one(np.ascontiguousarray(teacher_crops[0][:, ::-1])).class_map
    for a, b in ((mp.LEFT_EYE, mp.RIGHT_EYE), (mp.LEFT_BROW, mp.RIGHT_BROW)):
        flipped_a = centroid(mirrored, [a])
        original_b = centroid(original, [b])
        assert abs(flipped_a[0] - (224 - original_b[0])) < 8
        assert abs(flipped_a[1] - original_b[1]) < 8


def test_a_crop_without_a_face_gives_a_valid_map_and_a_reason_to_skip(parser, teacher_crops):
    grey = np.full((1, 224, 224, 3), 128, np.uint8)
    maps = parser.parse(grey)
    assert maps.shape == (1, 224, 224) and maps.dtype == np.uint8 and maps.max() <= 10
    maps, reasons = parser.parse_with_reasons(np.concatenate([teacher_crops[:2], grey]))
    assert len(maps) == 3
    assert reasons[0] is None and reasons[1] is None
    assert reasons[2] is not None and "face mesh score" in reasons[2]


def test_parse_rejects_wrong_input(parser):
    with pytest.raises(ValueError):
        parser.parse(np.zeros((224, 224, 3), np.uint8))
    with pytest.raises(ValueError):
        parser.parse(np.zeros((1, 224, 224, 3), np.float32))
    assert parser.parse(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 224, 224)


def test_window_matrix_maps_window_corners_to_the_rotated_square():
    x_axis = np.array([np.cos(0.3), np.sin(0.3)])
    y_axis = mp._down_perpendicular(x_axis, np.array([0.0, 1.0]))
    window = mp._window_matrix(np.array([100.0, 80.0]), 50.0, x_axis, y_axis, 64)
    centre = mp._apply(window, np.array([[32.0, 32.0]]))[0]
    np.testing.assert_allclose(centre, [100.0, 80.0], atol=1e-9)
    corner_a, corner_b = mp._apply(window, np.array([[0.0, 0.0], [64.0, 0.0]]))
    np.testing.assert_allclose(np.linalg.norm(corner_b - corner_a), 50.0, atol=1e-9)
    np.testing.assert_allclose(corner_b - corner_a, 50.0 * x_axis, atol=1e-9)


def test_iris_contours_far_from_the_mesh_are_refused():
    mesh_eye = np.stack([np.linspace(0, 20, 16), np.zeros(16)], axis=1)
    mesh_eye[8] = [20.0, 0.0]
    assert mp._iris_agrees(mesh_eye + [1.0, 0.5], mesh_eye)
    assert not mp._iris_agrees(mesh_eye + [0.0, 6.0], mesh_eye)       # shifted by 30 % of the eye width
    assert not mp._iris_agrees(mesh_eye * 0.5 + [5.0, 0.0], mesh_eye)  # half as wide
    mirrored = mesh_eye.copy()
    mirrored[:, 0] = 20.0 - mirrored[:, 0]
    assert not mp._iris_agrees(mirrored, mesh_eye)                    # corners swapped (window not mirrored)


def test_keep_touching_drops_islands():
    mask = np.zeros((20, 20), bool)
    mask[2:6, 2:6] = True
    mask[12:16, 12:16] = True
    anchor = np.zeros_like(mask)
    anchor[3, 3] = True
    kept = mp._keep_touching(mask, anchor)
    assert kept[2:6, 2:6].all() and not kept[12:16, 12:16].any()


def test_head_priors_put_hair_above_and_skin_inside(parsed):
    points = parsed[0].landmarks
    priors = mp.head_priors((224, 224), points)
    np.testing.assert_allclose(priors.sum(axis=0), 1.0, atol=1e-6)
    nose_x, nose_y = points[1].round().astype(int)
    top_y = int(points[10][1])
    assert priors[mp.REGION_SKIN, nose_y, nose_x] > 0.9
    above = max(top_y - 15, 0)
    assert priors[mp.REGION_HAIR, above, nose_x] > priors[mp.REGION_BACKGROUND, above, nose_x]
    assert priors[mp.REGION_BACKGROUND, 223, 0] > priors[mp.REGION_HAIR, 223, 0]


def test_colour_posteriors_let_colour_overrule_a_wrong_prior():
    """Three flat colours; priors mildly favour the truth except in a strip where they favour a wrong class."""
    h = w = 48
    truth = np.zeros((h, w), int)
    truth[:, 16:32] = 1
    truth[:16, 16:32] = 2
    colours = np.array([(40, 90, 200), (220, 170, 140), (60, 40, 20)], np.uint8)
    rng = np.random.default_rng(0)
    image = np.clip(colours[truth] + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    priors = 0.2 + 0.3 * np.eye(3)[truth].transpose(2, 0, 1)
    priors[:, 30:38, 0:12] = np.array([0.2, 0.6, 0.2])[:, None, None]   # says skin where it is background
    priors /= priors.sum(axis=0, keepdims=True)
    labels = mp.colour_posteriors(image, priors, iterations=4).argmax(axis=0)
    assert (labels[30:38, 0:12] == 0).mean() > 0.9
    assert (labels == truth).mean() > 0.95
