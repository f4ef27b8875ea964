"""common/fileio.py's one image listing."""

import pytest

from common.errors import PipelineError
from common.fileio import list_numbered_images


def test_numbered_images_listed_by_number(tmp_path):
    for name in ("000010.png", "000002.jpg", "7.jpeg", "notes.txt", "face_000003.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "000011.png").mkdir()  # a folder named like an image is not one
    found = list_numbered_images(tmp_path, "test", "make some")
    assert list(found) == [2, 7, 10] and found[10].name == "000010.png"


def test_missing_empty_or_twice_named_folder(tmp_path):
    assert list_numbered_images(tmp_path / "nowhere") == {}  # no fix given: nothing to list is not an error
    with pytest.raises(PipelineError, match=r"nowhere: dataset folder not found; run stage 1"):
        list_numbered_images(tmp_path / "nowhere", "dataset", "run stage 1")
    with pytest.raises(PipelineError, match=r"no \{img_no:06d\}.png/.jpg images; run stage 1"):
        list_numbered_images(tmp_path, "dataset", "run stage 1")
    (tmp_path / "000004.png").write_bytes(b"x")
    (tmp_path / "000004.jpg").write_bytes(b"x")
    with pytest.raises(PipelineError, match="image number 4 appears twice"):
        list_numbered_images(tmp_path, "dataset", "run stage 1")
    assert list(list_numbered_images(tmp_path)) == [4]
