"""The annotator's glasses detector: training on a known answer, the shipped ensemble on held-out hand labels."""

import re

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cnn.glasses import (TRAIN_END, GlassesCNN, GlassesDetector, GlassesTrainSettings, choose_threshold, labelled_faces,
                         predict_probabilities, prepare_images, read_hand_labels, save_ensemble, train_one)
from common.errors import PipelineError
from common.images import to_uint8
from stylegan.teacher_dcgan import sample_teacher_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _draw_frames(face: np.ndarray) -> np.ndarray:
    """Dark rectangular lenses around where the teacher's eyes sit, joined by a bridge."""
    framed = face.copy()
    for cx in (22, 42):
        cv2.rectangle(framed, (cx - 8, 22), (cx + 8, 31), (10, 10, 10), 1)
    cv2.line(framed, (30, 24), (34, 24), (10, 10, 10), 1)
    return framed


def test_training_learns_to_see_drawn_frames_on_unseen_faces():
    faces = to_uint8(sample_teacher_images(48, seed=3))
    framed = np.stack([_draw_frames(f) for f in faces])
    labels = np.array([0, 1] * 24)
    images = np.where(labels[:, None, None, None] == 1, framed, faces)  # each face appears once, framed or not
    x = prepare_images(images)
    model = train_one(x[:32], labels[:32], GlassesTrainSettings(epochs=25, batch_size=8, learning_rate=5e-3), seed=1)
    held_out = predict_probabilities([model], x[32:])
    assert roc_auc_score(labels[32:], held_out) >= 0.9


def test_prepare_images_accepts_nhwc_nchw_and_other_sizes():
    faces = to_uint8(sample_teacher_images(3, seed=2))
    nhwc = prepare_images(faces)
    assert nhwc.shape == (3, 3, 64, 64) and 0.0 <= float(nhwc.min()) and float(nhwc.max()) <= 1.0
    assert torch.equal(nhwc, prepare_images(torch.from_numpy(faces).permute(0, 3, 1, 2)))
    big = np.repeat(np.repeat(faces, 2, axis=1), 2, axis=2)  # 128 px, each pixel doubled
    torch.testing.assert_close(prepare_images(big), nhwc)


def test_threshold_is_the_best_f1_cut():
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    labels = np.array([0, 0, 1, 0, 1, 1])
    # 0.35 catches all three positives with one false alarm (F1 6/7); 0.8 misses one (F1 4/5)
    assert choose_threshold(scores, labels) == pytest.approx(0.35)
    assert choose_threshold(np.array([0.2, 0.9]), np.array([0, 1])) == pytest.approx(0.9)


def test_shipped_detector_finds_glasses_on_held_out_hand_labelled_faces():
    detector = GlassesDetector()
    labels = read_hand_labels()
    test = labels[(labels["teacher_index"] >= TRAIN_END) & (labels["glasses"] >= 0)]
    assert test["glasses"].sum() >= 20  # enough positives for the check to mean something
    faces = labelled_faces()[test["teacher_index"].to_numpy()]
    scores = detector.probabilities(faces)
    truth = test["glasses"].to_numpy()
    assert roc_auc_score(truth, scores) >= 0.9
    predicted = scores >= detector.threshold
    precision = (predicted & (truth == 1)).sum() / max(predicted.sum(), 1)
    recall = (predicted & (truth == 1)).sum() / truth.sum()
    assert precision >= 0.7 and recall >= 0.6
    assert detector.info["test"]["faces"] == len(test)  # the stored report is about this same split


def test_detector_file_errors_name_the_file(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        GlassesDetector(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PipelineError, match=str(garbage)) as info:
        GlassesDetector(garbage)
    assert "\n" not in str(info.value)
    empty = tmp_path / "empty.pt"
    save_ensemble(empty, [], threshold=0.5, info={})
    with pytest.raises(PipelineError, match="no fold models"):
        GlassesDetector(empty)
    # a fold whose layout differs from GlassesCNN: the differing keys are named in one line
    wrong = tmp_path / "wrong.pt"
    save_ensemble(wrong, [GlassesCNN()], threshold=0.5, info={})
    state = torch.load(wrong, weights_only=True)
    dropped = sorted(state["fold_0"])[0]
    del state["fold_0"][dropped]
    torch.save(state, wrong)
    with pytest.raises(PipelineError, match=re.escape(dropped)) as info:
        GlassesDetector(wrong)
    assert str(wrong) in str(info.value) and "\n" not in str(info.value)
