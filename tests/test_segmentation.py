"""Stage 3 runner: face crop + parsing on a tiny folder of teacher faces and one image without a face."""

import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from common.config import resolve_config
from common.errors import PipelineError
from common.fileio import load_image, save_image
from common.images import to_uint8
from segmentation.face_detection import CROP_SIZE, create_mtcnn, crop_face, detect_largest_faces
from segmentation.segmentation_stage import CLASS_COLOURS, SKIPPED_FILE, SegmentationConfig, output_paths, \
    run_segmentation, visualise
from stylegan.teacher_dcgan import sample_teacher_images

FACE_NUMBERS = (3, 7, 12)
BLANK_NUMBER = 20


@pytest.fixture(scope="module")
def teacher_faces():
    torch.set_num_threads(1)
    return to_uint8(sample_teacher_images(len(FACE_NUMBERS), seed=5))


@pytest.fixture
def input_dir(tmp_path, teacher_faces):
    folder = tmp_path / "synthesize_results_filtered"
    for number, face in zip(FACE_NUMBERS, teacher_faces):
        save_image(face, folder / f"{number:06d}.png")
    save_image(np.full((64, 64, 3), 128, np.uint8), folder / f"{BLANK_NUMBER:06d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def make_config(input_dir, tmp_path, profile="embedded", **overrides):
    values = dict(input_dir=str(input_dir), output_dir=str(tmp_path / "segmentation_results"), device="cpu",
                  num_threads=1, batch_size=2, grid_images=4)
    values.update(overrides)
    return resolve_config(SegmentationConfig, "segmentation", profile=profile, **values)


def test_mtcnn_finds_a_teacher_face_and_the_crop_is_224(teacher_faces):
    boxes = detect_largest_faces(create_mtcnn("cpu"), list(teacher_faces), upscale_to=256)
    assert all(box is not None for box in boxes)
    for face, box in zip(teacher_faces, boxes):
        x1, y1, x2, y2 = box.box
        # The teacher's faces fill the 64 px frame; MTCNN boxes may reach a little past its edges.
        assert 16 < (x1 + x2) / 2 < 48 and 16 < (y1 + y2) / 2 < 48
        assert 25 < x2 - x1 < 90 and 25 < y2 - y1 < 90
        assert box.probability > 0.9
        crop = crop_face(face, box.box)
        assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8


def test_stage_parses_faces_and_lists_the_blank_image(input_dir, tmp_path):
    config = make_config(input_dir, tmp_path)
    summary = run_segmentation(config, progress=False)
    out = tmp_path / "segmentation_results"
    assert (summary.parsed, summary.skipped, summary.already_done) == (len(FACE_NUMBERS), 1, 0)

    for number in FACE_NUMBERS:
        paths = output_paths(out, number)
        class_map = cv2.imread(str(paths["parsing"]), cv2.IMREAD_UNCHANGED)
        assert class_map.shape == (224, 224) and class_map.dtype == np.uint8
        assert class_map.max() <= 10 and {0, 1, 4, 5, 6}.issubset(set(np.unique(class_map)))
        face = load_image(paths["face"])
        assert face.shape == (224, 224, 3)
        np.testing.assert_array_equal(load_image(paths["visualization"]), visualise(face, class_map))
    assert not output_paths(out, BLANK_NUMBER)["parsing"].exists()

    skipped = pd.read_csv(out / SKIPPED_FILE)
    assert list(skipped.columns) == ["img_no", "img_path", "reason"]
    assert skipped["img_no"].tolist() == [BLANK_NUMBER]
    assert skipped["img_path"].iloc[0].endswith(f"{BLANK_NUMBER:06d}.png")
    assert "no face" in skipped["reason"].iloc[0]

    dumped = pd.read_json(out / "segmentation_config.json", typ="series")
    assert dumped["parser"] == "mesh" and dumped["input_dir"] == str(input_dir)
    grid = load_image(summary.grid_path)
    assert summary.grid_path == tmp_path / "segmentation_results_grid.png"
    assert grid.shape == (2 + 224 + 2, 2 + 6 * (224 + 2), 3)  # 3 faces x (crop, visualisation) in one row


def test_stage_resumes_and_force_redoes(input_dir, tmp_path):
    config = make_config(input_dir, tmp_path)
    run_segmentation(config, progress=False)
    out = tmp_path / "segmentation_results"
    first = output_paths(out, FACE_NUMBERS[0])["parsing"]
    stamp = first.stat().st_mtime_ns

    again = run_segmentation(config, progress=False)
    assert (again.parsed, again.skipped, again.already_done, again.skipped_before) == (0, 0, 4, 1)
    assert first.stat().st_mtime_ns == stamp

    # A run killed between images: the missing file is redone, nothing else.
    output_paths(out, FACE_NUMBERS[1])["visualization"].unlink()
    resumed = run_segmentation(config, progress=False)
    assert (resumed.parsed, resumed.skipped, resumed.already_done) == (1, 0, 3)
    assert first.stat().st_mtime_ns == stamp

    forced = run_segmentation(config, force=True, progress=False)
    assert (forced.parsed, forced.skipped, forced.already_done) == (len(FACE_NUMBERS), 1, 0)
    assert first.stat().st_mtime_ns != stamp
    assert pd.read_csv(out / SKIPPED_FILE)["img_no"].tolist() == [BLANK_NUMBER]
    assert not list(out.glob(".*.tmp*")), "no temporary files are left behind"


def test_damaged_inputs_stop_before_writing_and_repairs_need_no_force(input_dir, tmp_path):
    from common.errors import PipelineError
    from segmentation.segmentation_stage import UNREADABLE, write_skipped

    config = make_config(input_dir, tmp_path)
    out = tmp_path / "segmentation_results"
    # a truncated input stops the stage before anything is written
    victim = input_dir / f"{FACE_NUMBERS[0]:06d}.png"
    good = victim.read_bytes()
    victim.write_bytes(good[:len(good) // 2])
    with pytest.raises(PipelineError, match=f"{victim.name}: missing, truncated"):
        run_segmentation(config, progress=False)
    assert not out.exists() or not any(out.iterdir())
    victim.write_bytes(good)
    run_segmentation(config, progress=False)
    # an emptied output (a full disk in an older version, a user's repair) is redone by a plain re-run
    emptied = output_paths(out, FACE_NUMBERS[1])["parsing"]
    emptied.write_bytes(b"")
    assert run_segmentation(config, progress=False).parsed == 1 and emptied.stat().st_size > 0
    # an image an older run listed as unreadable is tried again once it reads
    output_paths(out, FACE_NUMBERS[2])["face"].unlink()
    write_skipped(out, {FACE_NUMBERS[2]: {"img_no": FACE_NUMBERS[2], "img_path": "x.png", "reason": UNREADABLE}})
    again = run_segmentation(config, progress=False)
    assert again.parsed == 1 and FACE_NUMBERS[2] not in pd.read_csv(out / SKIPPED_FILE)["img_no"].tolist()


def test_two_worker_processes_write_the_same_files_as_one(input_dir, tmp_path):
    one = run_segmentation(make_config(input_dir, tmp_path / "one"), progress=False)
    two = run_segmentation(make_config(input_dir, tmp_path / "two", workers=2), progress=False)
    assert (two.parsed, two.skipped) == (one.parsed, one.skipped) == (len(FACE_NUMBERS), 1)
    for number in FACE_NUMBERS:
        for kind, path in output_paths(tmp_path / "one" / "segmentation_results", number).items():
            other = output_paths(tmp_path / "two" / "segmentation_results", number)[kind]
            assert path.read_bytes() == other.read_bytes(), kind
    assert ((tmp_path / "two" / "segmentation_results" / SKIPPED_FILE).read_text()
            == (tmp_path / "one" / "segmentation_results" / SKIPPED_FILE).read_text().replace("/one/", "/two/"))


def test_crops_the_mesh_rejects_are_listed_not_written(input_dir, tmp_path):
    # Face scores are sigmoids that mostly stay a hair below 1.0 (a few saturate at exactly 1.0),
    # so a threshold of 1.0 rejects most of the faces.
    config = make_config(input_dir, tmp_path, min_mesh_score=1.0)
    summary = run_segmentation(config, progress=False)
    out = tmp_path / "segmentation_results"
    assert summary.parsed + summary.skipped == 4 and summary.skipped >= 2
    reasons = pd.read_csv(out / SKIPPED_FILE).set_index("img_no")["reason"]
    rejected = [number for number in FACE_NUMBERS if number in reasons.index]
    assert rejected and all("face mesh score" in reasons[number] for number in rejected)
    for number in FACE_NUMBERS:
        assert output_paths(out, number)["parsing"].exists() == (number not in rejected)


def test_visualisation_blends_half_and_half():
    crop = np.full((2, 2, 3), 200, np.uint8)
    class_map = np.array([[0, 10], [1, 6]], np.uint8)
    blend = visualise(crop, class_map)
    expected = np.round((crop.astype(float) + CLASS_COLOURS[class_map]) / 2)
    assert np.abs(blend.astype(float) - expected).max() <= 1


def test_missing_input_folder_names_the_stage_that_makes_it(tmp_path):
    config = make_config(tmp_path / "nowhere", tmp_path)
    with pytest.raises(PipelineError) as err:
        run_segmentation(config, progress=False)
    message = str(err.value)
    assert "run_cnn.py" in message and "nowhere" in message and "\n" not in message


def test_celeba256_without_checkpoint_is_a_one_line_error(input_dir, tmp_path):
    missing = tmp_path / "models" / "segmentation_model.pt"
    config = make_config(input_dir, tmp_path, profile="celeba256", checkpoint=str(missing))
    assert config.parser == "facexformer"
    with pytest.raises(PipelineError) as err:
        run_segmentation(config, progress=False)
    message = str(err.value)
    assert str(missing) in message and "\n" not in message
    assert not (tmp_path / "segmentation_results").exists(), "nothing is written before the models load"


def test_bad_config_values_are_refused(input_dir, tmp_path):
    with pytest.raises(PipelineError, match="parser"):
        make_config(input_dir, tmp_path, parser="bisenet")
    with pytest.raises(PipelineError, match="batch_size"):
        make_config(input_dir, tmp_path, batch_size=0)


def test_cli_prints_one_error_line(tmp_path, repo_root):
    result = subprocess.run([sys.executable, str(repo_root / "run_segmentation.py"), "--input-dir",
                             str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "run_cnn.py" in lines[0]
