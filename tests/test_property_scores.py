"""Stage 4 property scores: synthetic class maps with answers worked out by hand, and the CLI on a tmp folder."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from common.config import REPO_ROOT, resolve_config
from common.errors import PipelineError, run_main
from common.fileio import save_image
from segmentation import property_scores as ps
from segmentation.property_score_stage import PropertyScoresConfig, find_segmentation_pairs, load_class_map

S = ps.MAP_SIZE


def skin_map() -> np.ndarray:
    """Face skin everywhere: no background, eyes, nose, mouth or hair unless a test paints them."""
    return np.full((S, S), ps.FACE_SKIN, dtype=np.uint8)


def grey_face(value: int = 100) -> np.ndarray:
    return np.full((S, S, 3), value, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# eyes

def test_eyes_v1_is_mean_row_extent_in_first_84_window_rows():
    m = skin_map()
    m[70:75, 40:60] = ps.LEFT_EYE       # rows 70..74 -> 4
    m[80:90, 150:170] = ps.RIGHT_EYE    # rows 80..89 -> 9
    assert ps.eyes_score_v1(m) == pytest.approx(6.5)
    m[150, 50] = ps.LEFT_EYE            # row 150 is past the 84 scanned rows [56, 140)
    m[100, 30] = ps.RIGHT_EYE           # column 30 is outside the right window [56, 224)
    m[60, 200] = ps.LEFT_EYE            # column 200 is outside the left window [0, 168)
    assert ps.eyes_score_v1(m) == pytest.approx(6.5)
    m[139, 45] = ps.LEFT_EYE            # last scanned row counts: 139 - 70
    assert ps.eyes_score_v1(m) == pytest.approx((69 + 9) / 2)
    assert ps.eyes_score_v1(skin_map()) == 0.0


def test_eyes_v2_is_tallest_column_times_cos_of_farthest_pair():
    m = skin_map()
    m[70:75, 40:60] = ps.LEFT_EYE  # 5x20 bar: columns 4 tall, farthest pair = opposite corners
    left = 4 * 19 / math.hypot(19, 4)
    eyes, _ = ps.eyes_and_pose_v2(m)
    assert eyes == pytest.approx(left)

    m[80:90, 150:160] = ps.RIGHT_EYE  # 10x10 square: extent 9, diagonal -> cos = 1/sqrt(2)
    right = 9 / math.sqrt(2)
    assert right > left
    assert ps.eyes_and_pose_v2(m)[0] == pytest.approx(right)  # the larger eye


def test_eyes_v2_tilted_eye_and_column_gap():
    m = skin_map()
    for k in range(10):  # a two-row band climbing 1 row per 3 columns: columns are 1 tall
        m[90 + k:92 + k, 130 + 3 * k:133 + 3 * k] = ps.RIGHT_EYE
    # farthest pair: (90, 130) and (100, 159)
    assert ps.eyes_and_pose_v2(m)[0] == pytest.approx(1 * 29 / math.hypot(29, 10))

    m = skin_map()
    m[70, 50] = ps.LEFT_EYE
    m[80, 50] = ps.LEFT_EYE  # one column with a gap: extent is last - first = 10; pair vertical -> cos 0
    assert ps.eyes_and_pose_v2(m)[0] == pytest.approx(0.0)
    m[80, 60] = ps.LEFT_EYE  # farthest pair now (70, 50)-(80, 60): cos = 1/sqrt(2)
    assert ps.eyes_and_pose_v2(m)[0] == pytest.approx(10 / math.sqrt(2))
    m[150, 52] = ps.LEFT_EYE  # v2 scans all 112 window rows: column 52 is 0 tall, pair (70,50)-(150,52)
    assert ps.eyes_and_pose_v2(m)[0] == pytest.approx(10 * 2 / math.hypot(2, 80))


def test_pose_v2_is_slope_between_eye_centroids_with_guards():
    m = skin_map()
    m[70:74, 40:60] = ps.LEFT_EYE      # centroid (71.5, 49.5)
    m[80:84, 150:160] = ps.RIGHT_EYE   # centroid (81.5, 154.5)
    assert ps.eyes_and_pose_v2(m)[1] == pytest.approx(10 / 105)

    only_left = m.copy()
    only_left[only_left == ps.RIGHT_EYE] = ps.FACE_SKIN
    assert ps.eyes_and_pose_v2(only_left)[1] == 0.0

    same_x = skin_map()
    same_x[70:72, 100:110] = ps.LEFT_EYE   # both windows contain columns 100..109
    same_x[90:93, 100:110] = ps.RIGHT_EYE  # same centroid x -> the original divided by zero; here 0
    assert ps.eyes_and_pose_v2(same_x)[1] == 0.0


def test_pose_v1_is_minus_nose_correlation():
    m = skin_map()
    for k in range(10):
        m[100 + k, 100 + k] = ps.NOSE
    assert ps.pose_score_v1(m) == pytest.approx(-1.0)
    m = skin_map()
    for k in range(10):
        m[100 + k, 110 - k] = ps.NOSE
    assert ps.pose_score_v1(m) == pytest.approx(1.0)

    rng = np.random.default_rng(3)
    m = skin_map()
    ys, xs = rng.integers(90, 140, 40), rng.integers(90, 130, 40)
    m[ys, xs] = ps.NOSE
    yy, xx = np.nonzero(m == ps.NOSE)
    assert ps.pose_score_v1(m) == pytest.approx(-np.corrcoef(xx, yy)[0, 1])

    flat = skin_map()
    flat[120, 100:110] = ps.NOSE  # one row: correlation undefined -> 0
    assert ps.pose_score_v1(flat) == 0.0
    single = skin_map()
    single[120, 100] = ps.NOSE
    assert ps.pose_score_v1(single) == 0.0
    assert ps.pose_score_v1(skin_map()) == 0.0


# ---------------------------------------------------------------------------------------------
# mouth and hair

def test_mouth_scores():
    m = skin_map()
    m[150:153, 100:120] = ps.UPPER_LIP    # 60 px
    m[153:158, 100:120] = ps.INNER_MOUTH  # 100 px, rows 153..157
    m[158:162, 100:120] = ps.LOWER_LIP    # 80 px
    assert ps.mouth_score_v1(m) == 11 + 4  # lip rows 150..161, inner rows 153..157
    assert ps.mouth_score_v2(m) == pytest.approx(100 / 240)
    closed = m.copy()
    closed[closed == ps.INNER_MOUTH] = ps.UPPER_LIP
    assert ps.mouth_score_v1(closed) == 11 and ps.mouth_score_v2(closed) == 0.0
    assert ps.mouth_score_v1(skin_map()) == 0.0 and ps.mouth_score_v2(skin_map()) == 0.0


def test_hair_length_v1_last_row_and_bottom_row_bonus():
    m = skin_map()
    m[20:201, 0:30] = ps.HAIR
    assert ps.hair_length_v1(m) == 200.0
    m[20:224, 0:30] = ps.HAIR
    m[223, 200:210] = ps.HAIR  # bottom row: 30 in the left half, 10 in the right half
    assert ps.hair_length_v1(m) == 223 + (30 + 10) / 2
    assert ps.hair_length_v1(skin_map()) == 0.0


def test_hair_length_v2_counts_rows_with_20_hair_pixels():
    m = skin_map()
    m[0:223, 0:25] = ps.HAIR       # 25 per row; rows before 56 do not count
    m[100:110, 19:25] = ps.FACE_SKIN  # 19 per row -> these 10 rows do not count
    m[223, 100:124] = ps.HAIR      # bottom row: 12 left + 12 right = 24 >= 20
    assert ps.hair_length_v2(m) == (168 - 10) + (12 - 10) / 2 + (12 - 10) / 2
    assert ps.hair_length_v1(m) == 223 + (12 + 12) / 2

    m[223, :] = ps.FACE_SKIN
    m[223, 0:19] = ps.HAIR  # 19 -> neither counted nor a bonus
    assert ps.hair_length_v2(m) == 168 - 10 - 1
    m[223, 0:35] = ps.HAIR  # all in the left half: max(35-10, 0)/2 + max(0-10, 0)/2
    assert ps.hair_length_v2(m) == 168 - 10 + 25 / 2
    assert ps.hair_length_v2(skin_map()) == 0.0


def test_hair_color_median_and_trimmed_mean():
    m, face = skin_map(), grey_face(250)
    values = np.arange(20) ** 2  # 0, 1, 4, ..., 361 -> cap below 256 by splitting the channels
    m[200, 0:20] = ps.HAIR
    face[200, 0:20] = np.stack([values // 3, values // 3, values - 2 * (values // 3)], axis=1)
    brightness = ps.pixel_brightness(face)
    assert np.allclose(brightness[200, :20], values / 3)
    assert ps.hair_color_v1(m, brightness) == pytest.approx((81 + 100) / 2 / 3)   # median
    assert ps.hair_color_v2(m, brightness) == pytest.approx((1785 - 1) / 16 / 3)  # mean of i^2, i = 2..17

    one = skin_map()
    one[200, 5] = ps.HAIR
    face = grey_face(250)
    face[200, 5] = (30, 60, 90)
    brightness = ps.pixel_brightness(face)
    assert ps.hair_color_v1(one, brightness) == pytest.approx(60.0)
    assert ps.hair_color_v2(one, brightness) == 127.5  # slice [0, 0) leaves nothing
    assert ps.hair_color_v1(skin_map(), brightness) == 127.5
    assert ps.hair_color_v2(skin_map(), brightness) == 127.5


# ---------------------------------------------------------------------------------------------
# background

def test_background_trimmed_statistics_and_fallbacks():
    m, face = skin_map(), grey_face(250)
    m[10, 0:100] = ps.BACKGROUND
    face[10, 0:100] = np.arange(100)[::-1, None]
    m[150, :] = ps.BACKGROUND  # rows >= 112 are ignored
    face[150, :] = 255
    mean, std = ps.background_scores(m, ps.pixel_brightness(face))
    assert mean == pytest.approx(49.5)  # values 5..94 kept
    assert std == pytest.approx(math.sqrt((90 ** 2 - 1) / 12))

    def with_values(*vals):
        mm, ff = skin_map(), grey_face(250)
        for i, v in enumerate(vals):
            mm[20, 30 + i] = ps.BACKGROUND
            ff[20, 30 + i] = v
        return ps.background_scores(mm, ps.pixel_brightness(ff))

    assert with_values() == (192.0, 0.0)
    assert with_values(77) == (77.0, 0.0)
    assert with_values(200, 40) == (40.0, 0.0)          # n=2: slice [0, 1) keeps one value
    assert with_values(60, 10, 20) == pytest.approx((15.0, 5.0))  # n=3: slice [0, 2)


# ---------------------------------------------------------------------------------------------
# hairstyle

def test_hairstyle_stripes_and_ramp():
    hair = np.full((S, S), ps.HAIR, dtype=np.uint8)
    y = np.arange(S)[:, None].repeat(S, axis=1)
    x = y.T
    horizontal = np.where((y // 8) % 2 == 1, 80, 0).astype(np.uint8)
    # The row below (+8) is the opposite stripe: vertical = |80 - 2m| with m = 20 * (rows of the block in
    # a bright stripe); per y mod 16 that is 80 x5, 40, 0, 40, 80 x5, 40, 0, 40 (sum 960); anchors
    # y = 112..212 are six periods plus y mod 16 = 0..4 (5 x 80). No horizontal change.
    expected = (6 * 960 + 5 * 80) / 101 / 5
    assert ps.hairstyle_score(hair, np.repeat(horizontal[:, :, None], 3, axis=2)) == pytest.approx(expected)
    vertical = np.where((x // 8) % 2 == 1, 80, 0).astype(np.uint8)  # only horizontal change -> 0
    assert ps.hairstyle_score(hair, np.repeat(vertical[:, :, None], 3, axis=2)) == pytest.approx(0.0)
    ramp = np.stack([y, y, y], axis=2).astype(np.uint8)  # block below is 8 brighter: 8 / (0 + 5)
    ratios = ps.hairstyle_ratios(hair, ramp)
    assert ratios.size == 101 * 205
    assert np.allclose(ratios, 1.6)


def _single_anchor_case():
    m = skin_map()
    m[120:132, 20:40] = ps.HAIR  # only anchor (120, 28) has all four blocks inside
    face = grey_face(100)
    face[128:132, 28:32] = 130  # below: vertical 30
    face[120:124, 20:24] = 110  # left: horizontal 10
    return m, face


def test_hairstyle_needs_whole_blocks_of_hair():
    m, face = _single_anchor_case()
    assert ps.hairstyle_ratios(m, face).tolist() == [pytest.approx(30 / (10 + 5))]
    assert ps.hairstyle_score(m, face) == pytest.approx(2.0)
    # (121, 29) is not one of the original's probe pixels, yet its block is no longer all hair
    for hole in [(121, 29), (129, 30), (122, 21), (123, 38), (131, 31)]:
        holed = m.copy()
        holed[hole] = ps.FACE_SKIN
        assert ps.hairstyle_ratios(holed, face).size == 0, hole
        assert ps.hairstyle_score(holed, face) == 0.45
    assert ps.hairstyle_score(skin_map(), face) == 0.45


def test_hairstyle_vectorised_equals_anchor_loop():
    rng = np.random.default_rng(7)
    m = np.full((S, S), ps.HAIR, dtype=np.uint8)
    m[rng.integers(0, S, 150), rng.integers(0, S, 150)] = ps.FACE_SKIN
    face = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    hair = m == ps.HAIR
    value = face.astype(np.float64)
    expected = []
    for yy in range(112, 213):
        for xx in range(8, 213):
            blocks = [(yy, xx), (yy + 8, xx), (yy, xx - 8), (yy, xx + 8)]
            if all(hair[by:by + 4, bx:bx + 4].all() for by, bx in blocks):
                mc, mb, ml, mr = (value[by:by + 4, bx:bx + 4].mean() for by, bx in blocks)
                expected.append(abs(mc - mb) / (max(abs(mc - ml), abs(mc - mr)) + 5))
    ratios = ps.hairstyle_ratios(m, face)
    assert 1000 < len(expected) < 101 * 205
    assert np.allclose(ratios, expected)


# ---------------------------------------------------------------------------------------------
# farthest pair

def _brute_force_pair(points: np.ndarray) -> tuple[int, int]:
    best, pair = -1, None
    for i in range(len(points)):
        d = ((points[i + 1:] - points[i]) ** 2).sum(axis=1)
        if d.size and d.max() > best:  # strict '>' keeps the first pair among ties
            best, pair = int(d.max()), (i, i + 1 + int(d.argmax()))
    return pair


def test_farthest_pair_hull_equals_brute_force():
    rng = np.random.default_rng(11)
    for trial in range(40):
        h, w = rng.integers(2, 18), rng.integers(2, 30)
        blob = rng.random((h, w)) < rng.uniform(0.2, 0.9)
        if trial % 8 == 0:  # rectangles: two equally distant diagonals
            blob = np.ones((h, w), bool)
        elif trial % 4 == 0:  # ellipses: symmetric, so ties again
            yy, xx = np.mgrid[:h, :w]
            blob = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 <= 1
        points = np.argwhere(blob) + rng.integers(0, 150, 2)
        if len(points) < 2:
            continue
        assert ps.farthest_pair(points) == _brute_force_pair(points), trial
    line = np.array([[5, k] for k in range(12)])
    assert ps.farthest_pair(line) == (0, 11)
    assert ps.farthest_pair(np.array([[0, 0], [3, 4]])) == (0, 1)
    assert ps.farthest_pair(np.array([[0, 0], [0, 5], [5, 0]])) == (1, 2)


# ---------------------------------------------------------------------------------------------
# normalisation

def test_normalise_column():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    std = np.std(values, ddof=1)  # 1.29099...
    expected = np.round((values - 2.5) / std, 4)
    z = ps.normalise_column(values)
    assert z.tolist() == expected.tolist() == [-1.1619, -0.3873, 0.3873, 1.1619]
    assert ps.normalise_column(np.full(5, 0.1)).tolist() == [0.0] * 5
    assert ps.normalise_column(np.array([0.1, 0.1 + 1e-17, 0.1])).tolist() == [0.0] * 3
    assert ps.normalise_column(np.array([7.0])).tolist() == [0.0]
    tiny_negative = ps.normalise_column(np.array([-1.0, 1.0, -1e-5]))  # z of the last is about -6e-6
    assert tiny_negative[2] == 0.0 and not np.signbit(tiny_negative[2])  # written as 0.0, not -0.0


# ---------------------------------------------------------------------------------------------
# the CLI on a small folder

def synthetic_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rough face layout whose every score varies with the random draws."""
    m = skin_map()
    m[:rng.integers(30, 80), :] = ps.BACKGROUND
    bottom = rng.integers(150, 225)
    m[30:bottom, :rng.integers(25, 45)] = ps.HAIR
    m[30:bottom, S - rng.integers(25, 45):] = ps.HAIR
    m[:rng.integers(20, 40), 60:170] = ps.HAIR
    ey = rng.integers(85, 100)
    m[ey:ey + rng.integers(3, 9), 60:80] = ps.LEFT_EYE
    m[ey + rng.integers(-4, 5):ey + 12, 140:160 + rng.integers(0, 5)] = ps.RIGHT_EYE
    for k in range(12):
        m[110 + k, 108 + (k * rng.integers(-1, 2)) // 2:112] = ps.NOSE
    my = rng.integers(145, 160)
    m[my:my + 3, 95:130] = ps.UPPER_LIP
    m[my + 3:my + 3 + rng.integers(0, 6), 98:126] = ps.INNER_MOUTH
    m[my + 8:my + 12, 95:130] = ps.LOWER_LIP
    face = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    face[m == ps.HAIR] //= np.uint8(rng.integers(1, 4))
    return m, face


def write_folder(folder: Path, numbers, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for no in numbers:
        m, face = synthetic_pair(rng)
        assert cv2.imwrite(str(folder / f"parsing_{no:06d}.png"), m)
        save_image(face, folder / f"face_{no:06d}.png")
        save_image(face, folder / f"parsing_visualization_{no:06d}.png")  # must not be taken for a map


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    import compute_property_scores

    # These tests are about scoring class maps; the embedded profile's landmark geometry has its own tests
    # (tests/test_face_geometry.py).
    if "--geometry" not in argv:
        argv = ("--geometry", "segmentation", *argv)
    monkeypatch.setattr(sys, "argv", ["compute_property_scores.py", *argv])
    with pytest.raises(SystemExit) as exc:
        run_main(compute_property_scores.main)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


NUMBERS = [3, 17, 42, 100, 250, 1234]


@pytest.mark.parametrize("algorithm", ["v1", "v2", "hairstyle"])
def test_cli_writes_normalised_csv(tmp_path, monkeypatch, capsys, algorithm):
    seg = tmp_path / "seg"
    write_folder(seg, NUMBERS)
    out = tmp_path / "out" / "scores.csv"
    code, stdout, _ = run_cli(monkeypatch, capsys, "--algorithm", algorithm, "--segmentation-dir", str(seg),
                              "--output", str(out))
    assert code == 0
    assert f"{len(NUMBERS)} images" in stdout
    table = pd.read_csv(out, index_col=0)
    assert list(table.columns) == ["img_no", "img_path", *ps.SCORE_COLUMNS[algorithm]]
    assert open(out).readline().startswith(",img_no,img_path,")  # unnamed index column first
    assert table.index.tolist() == list(range(len(NUMBERS)))
    assert table["img_no"].tolist() == NUMBERS
    for no, path in zip(NUMBERS, table["img_path"]):
        assert not os.path.isabs(path)
        assert (REPO_ROOT / path).resolve() == (seg / f"face_{no:06d}.png").resolve()
    for column in ps.SCORE_COLUMNS[algorithm]:
        values = table[column].to_numpy()
        assert np.allclose(values, np.round(values, 4))
        assert abs(values.mean()) < 1e-3, column
        assert abs(values.std(ddof=1) - 1) < 1e-3, column
    assert out.with_suffix(".config.json").is_file()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_raw_scores_match_pure_functions(tmp_path, monkeypatch, capsys):
    seg = tmp_path / "seg"
    write_folder(seg, NUMBERS[:3], seed=5)
    code, _, _ = run_cli(monkeypatch, capsys, "--segmentation-dir", str(seg), "--output-dir", str(tmp_path), "--raw")
    assert code == 0
    table = pd.read_csv(tmp_path / "all_scores_v2.csv", index_col=0)  # default name for the default (v2)
    for row in table.itertuples():
        m = load_class_map(seg / f"parsing_{row.img_no:06d}.png")
        face = cv2.imread(str(seg / f"face_{row.img_no:06d}.png"))[:, :, ::-1]
        expected = ps.compute_scores("v2", m, face)
        assert [getattr(row, c) for c in ps.V1_V2_COLUMNS] == pytest.approx([expected[c] for c in ps.V1_V2_COLUMNS])
    assert (tmp_path / "all_scores_v2.config.json").read_text().count('"raw": true') == 1


def test_profiles_hold_the_section():
    for profile in ("embedded", "celeba256"):
        config = resolve_config(PropertyScoresConfig, "property_scores", profile=profile)
        assert config.algorithm == "v2"
        assert config.output_path() == REPO_ROOT / "segmentation/property_score_results/all_scores_v2.csv"
    with pytest.raises(PipelineError, match="v1, v2, hairstyle"):
        resolve_config(PropertyScoresConfig, "property_scores", algorithm="v3")


def _corrupt(folder: Path) -> str:
    (folder / "parsing_000017.png").write_bytes(b"not a png")
    return "parsing_000017.png"


def _no_face(folder: Path) -> str:
    (folder / "face_000042.png").unlink()
    return "face_000042.png"


def _class_11(folder: Path) -> str:
    m = cv2.imread(str(folder / "parsing_000100.png"), cv2.IMREAD_UNCHANGED)
    m[5, 5] = 11
    cv2.imwrite(str(folder / "parsing_000100.png"), m)
    return "parsing_000100.png"


def _wrong_size(folder: Path) -> str:
    cv2.imwrite(str(folder / "parsing_000250.png"), np.zeros((200, 200), np.uint8))
    return "parsing_000250.png"


def _colour_map(folder: Path) -> str:
    cv2.imwrite(str(folder / "parsing_000003.png"), np.zeros((S, S, 3), np.uint8))
    return "parsing_000003.png"


@pytest.mark.parametrize("damage", [_corrupt, _no_face, _class_11, _wrong_size, _colour_map])
def test_cli_bad_input_is_one_line_error(tmp_path, monkeypatch, capsys, damage):
    seg = tmp_path / "seg"
    write_folder(seg, NUMBERS)
    name = damage(seg)
    out = tmp_path / "out" / "scores.csv"
    code, _, err = run_cli(monkeypatch, capsys, "--segmentation-dir", str(seg), "--output", str(out))
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_missing_or_empty_folder(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "--segmentation-dir", str(tmp_path / "nope"))
    assert code == 2 and err.startswith("error:") and "nope" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    save_image(grey_face(), empty / "face_000001.png")
    save_image(grey_face(), empty / "parsing_visualization_000001.png")
    code, _, err = run_cli(monkeypatch, capsys, "--segmentation-dir", str(empty))
    assert code == 2 and "no parsing_NNNNNN.png" in err and "empty" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(PipelineError):
        find_segmentation_pairs(tmp_path / "nope")
