"""common/freshness.py: digests, provenance records, their comparison and the newer-than check; and that the records
and fingerprints the stages write through it are the bytes they wrote before it existed, so an existing run's models
and shards are still reused (the expected values below were computed with the code of commit c8888c1)."""

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from common.checkpoints import save_weights
from common.errors import PipelineError
from common.freshness import (checkpoint_digest, digest, newer_than, read_record, record_text, what_differs,
                              write_record)

LABELS = pd.DataFrame({"img_name": [3, 1, 2], "gender": [0, 1, 1], "quality": [1, 1, 0], "age": [0, 0, 1]})
SCORES = pd.DataFrame({"img_no": [4, 2], "eyes_score": [0.1234, -1.5], "mouth_score": [2.0, 1e-7]})
STATE = {"generator": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2])},
         "step": 3, "list": [torch.tensor([1.5, 2.5], dtype=torch.bfloat16), "x"], "flag": True}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- digest -----------------------------------------------------------------------------------------------------

def test_digest_hashes_the_parts_in_order_by_their_bytes():
    assert digest(b"ab", "c") == hashlib.sha256(b"abc").hexdigest()[:16]
    assert digest("abc") == digest("a", b"bc") != digest("bc", "a")
    assert digest("abc", algorithm="sha1", length=None) == hashlib.sha1(b"abc").hexdigest()
    assert len(digest("abc", length=8)) == 8
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert digest(fortran) == digest(np.ascontiguousarray(fortran)) == digest(torch.from_numpy(fortran))  # C order
    assert digest(fortran) != digest(fortran.T.copy())
    assert digest(SCORES) == digest(SCORES.to_csv(index=False))
    with pytest.raises(TypeError):
        digest(3)


def test_checkpoint_digest_follows_the_tensors_not_the_file_bytes(tmp_path):
    save_weights(tmp_path / "a.pth", STATE)
    save_weights(tmp_path / "b.pth", STATE)
    assert (tmp_path / "a.pth").read_bytes() != (tmp_path / "b.pth").read_bytes()  # torch.save's serialization id
    assert checkpoint_digest(tmp_path / "a.pth") == checkpoint_digest(tmp_path / "b.pth") == "e7a1edca61590394"
    changed = {**STATE, "step": 4}
    save_weights(tmp_path / "c.pth", changed)
    assert checkpoint_digest(tmp_path / "c.pth") != checkpoint_digest(tmp_path / "a.pth")
    with pytest.raises(PipelineError, match="not found"):
        checkpoint_digest(tmp_path / "missing.pth")


# --- records ----------------------------------------------------------------------------------------------------

def test_record_text_is_sorted_json_compact_or_indented_with_a_line_end():
    record = {"b": 1, "a": {"d": [1, 2], "c": "x"}}
    assert record_text(record) == '{"a": {"c": "x", "d": [1, 2]}, "b": 1}'
    assert record_text(record, indent=2) == json.dumps(record, indent=2, sort_keys=True) + "\n"


def test_write_and_read_record_round_trip_and_keyed_entries(tmp_path):
    path = tmp_path / "sub" / "info.json"
    assert read_record(path) is None
    write_record(path, {"seed": 1, "kind": "seven"})
    assert path.read_text() == '{\n  "kind": "seven",\n  "seed": 1\n}\n'
    assert read_record(path) == {"seed": 1, "kind": "seven"}
    table = tmp_path / "model_info.json"
    write_record(table, {"seed": 1}, key="quality")
    write_record(table, {"seed": 2}, key="gender")
    write_record(table, {"seed": 3}, key="quality")  # replaces its own entry, keeps the others
    assert json.loads(table.read_text()) == {"gender": {"seed": 2}, "quality": {"seed": 3}}
    assert read_record(table, "gender") == {"seed": 2} and read_record(table, "age") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_info.json", "sub"]  # no temporary file left


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe"])
def test_an_unreadable_record_is_a_one_line_error_naming_the_file_and_the_fix(tmp_path, content):
    path = tmp_path / "info.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(PipelineError) as raised:
        read_record(path, fix="delete it")
    message = str(raised.value)
    assert str(path) in message and message.endswith("delete it") and "\n" not in message
    with pytest.raises(PipelineError):
        write_record(path, {"seed": 1}, key="gender")  # would drop the other entries


def test_what_differs_names_the_first_difference_in_one_line():
    stored = {"resolution": 64, "seed": 0, "width_multiplier": 0.5, "extra": 1}
    assert what_differs(stored, {"resolution": 64, "seed": 0}) == ""  # keys of the expected record only
    assert what_differs(stored, {"resolution": 64, "seed": 1}) == "seed = 0, now 1"
    assert what_differs(stored, {"seed": 1, "width_multiplier": 0.25, "resolution": 64}) == \
        "seed = 0, now 1 (and width_multiplier)"
    assert what_differs(stored, {"seed": 1, "width_multiplier": 0.25}, keys=("width_multiplier", "seed")) == \
        "width_multiplier = 0.5, now 0.25 (and seed)"
    assert what_differs(stored, {"seed": 1, "resolution": 64}, keys=("resolution",)) == ""  # only the keys asked
    assert what_differs(stored, {"new_key": "a"}) == "new_key = None, now 'a'"
    assert what_differs(stored, {"new_key": "a"}, missing_ok=True) == ""  # a record from before the key existed
    assert what_differs(stored, {"seed": 1}, missing_ok=True) == "seed = 0, now 1"


def test_what_differs_reads_records_stored_as_text():
    expected = record_text({"generator": "g.pth", "seed": 5})
    assert what_differs(record_text({"seed": 5, "generator": "g.pth"}), expected) == ""
    assert what_differs(record_text({"generator": "g.pth", "seed": 6}), expected) == "seed = 6, now 5"
    assert what_differs("{}", expected) == "generator = None, now 'g.pth' (and seed)"
    assert what_differs("abc", "abc") == "" and what_differs("abc", expected) == f"'abc', now {expected!r}"
    assert what_differs(None, expected) != ""


# --- newer than its inputs ---------------------------------------------------------------------------------------

def test_newer_than_holds_when_no_input_was_modified_after_the_result(tmp_path):
    result, a, b = tmp_path / "result.csv", tmp_path / "a.pt", tmp_path / "b.pt"
    for path in (a, b):
        path.write_text("x")
    assert not newer_than(result, [a, b])  # no result yet
    result.write_text("r")
    os.utime(a, (100, 100))
    os.utime(b, (200, 200))
    os.utime(result, (200, 200))
    assert newer_than(result, [a, b]) and newer_than(result, [])
    os.utime(b, (201, 201))
    assert not newer_than(result, [a, b]) and newer_than(result, [a])
    assert not newer_than(result, [a, tmp_path / "missing.pt"])


# --- the stages' records and fingerprints: the same bytes as before ----------------------------------------------

# The training settings the records below were made with (the original recipe, the configs' earlier defaults).
ORIGINAL_TRAINING = dict(width_multiplier=1.0, learning_rate=5e-5, train_batch_size=16, eval_batch_size=64,
                         max_epochs=1000, patience=20, cosine_t_max=10)

def test_stage2_labels_fingerprint_and_model_info_are_unchanged(tmp_path):
    from cnn.config import CnnConfig
    from cnn.fold_models import MODEL_INFO_FILE, write_model_record
    from cnn.labels import labels_fingerprint

    assert labels_fingerprint(LABELS, ["gender", "quality"]) == "badffcb15b838915"
    config = CnnConfig(device="cpu", models_dir=str(tmp_path / "models"), **ORIGINAL_TRAINING, max_restarts=5,
                       augment_flip=False, channels_last=False)
    write_model_record(config, "quality", "0123456789abcdef")
    write_model_record(config, "gender", "fedcba9876543210")
    assert sha256((tmp_path / "models" / MODEL_INFO_FILE).read_text()) == \
        "ce29c5600431f8e07508558c1dafb69963a0b1719c414698622abcaddb4d56c4"


@pytest.mark.parametrize("kind, expected", [
    ("seven", "5032a205b33bf2f4151a2836c05d8b296622508cbf2b46e50e345d9bb6fec0d1"),
    ("hairstyle", "a5b684238e58a083b4b160b95d81b3faae446299391828313c6c4c0da1e3eb1d")])
def test_stage5_scores_fingerprint_and_info_record_are_unchanged(tmp_path, kind, expected):
    from property_score_cnn.config import PropertyCnnConfig
    from property_score_cnn.dataset import Dataset
    from property_score_cnn.train_or_reuse import model_record, scores_fingerprint

    assert scores_fingerprint(Dataset(SCORES, [], None, None, None), ("eyes", "mouth")) == "020b7a69cf8cd134"
    hairstyle_run = dict(patience=45, lr_schedule="exponential", lr_gamma=0.95) if kind == "hairstyle" else {}
    config = PropertyCnnConfig(device="cpu", **(ORIGINAL_TRAINING | hairstyle_run))
    record = {**model_record(config, kind, "0123456789abcdef"), "best_epoch": 3,
              "total_epochs": 5, "best_criterion": 0.5, "elapsed_time": 1.25, "scores_csv": "a/b.csv"}
    write_record(tmp_path / "model.pth.info.json", record)
    assert sha256((tmp_path / "model.pth.info.json").read_text()) == expected


def test_stage6_dataset_fingerprint_is_unchanged():
    from stylegan_modified.dataset import FineTuneDataset

    labels = np.asfortranarray(np.array([[0.5, -1.25, 3.0], [2.0, 0.0, -0.125]], np.float32))
    dataset = FineTuneDataset(np.array([5, 3], np.int32), torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                              torch.from_numpy(labels))
    assert dataset.fingerprint() == "865aea5c0cc51feb"


def test_vectorfind_run_fingerprint_is_unchanged(tmp_path):
    from vectorfind.sampling import run_fingerprint

    save_weights(tmp_path / "g.pth", STATE)
    assert run_fingerprint(tmp_path / "g.pth", "cnn.pth:0123456789abcdef", 5, 7) == (
        '{"generator": "g.pth", "generator_digest": "e7a1edca61590394", "label_size": 7, '
        '"property_cnn": "cnn.pth:0123456789abcdef", "seed": 5}')
