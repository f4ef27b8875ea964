"""Defaults in one place: every section's dataclass defaults are the embedded profile's values, and the training
fields stage 2 and stage 5 share are declared once (common/training_loop.py TrainingSettings)."""

import dataclasses
import typing

import pytest

from cnn.config import CnnConfig
from common.config import resolve_config
from common.training_loop import TrainingSettings
from face_app.launch import AppConfig
from property_score_cnn.config import PropertyCnnConfig
from segmentation.property_score_stage import PropertyScoresConfig
from segmentation.segmentation_stage import SegmentationConfig
from stylegan.generate import GeneratorConfig
from stylegan_modified.config import FineTuneConfig
from vectorfind.settings import VectorFindConfig

SECTIONS = {"generator": GeneratorConfig, "cnn": CnnConfig, "segmentation": SegmentationConfig,
            "property_scores": PropertyScoresConfig, "property_cnn": PropertyCnnConfig, "fine_tuning": FineTuneConfig,
            "vectorfind": VectorFindConfig, "app": AppConfig}


@pytest.mark.parametrize("section", SECTIONS)
def test_dataclass_defaults_are_the_embedded_profile(section, monkeypatch):
    """`Cls()` is the embedded profile's section (not quick, the default run): a value the profile sets and the
    dataclass does not (or the other way round) would make the two disagree about what a run does."""
    monkeypatch.delenv("OHLORA_QUICK", raising=False)
    cls = SECTIONS[section]
    resolved = dataclasses.asdict(resolve_config(cls, section, profile="embedded"))
    defaults = dataclasses.asdict(cls())
    assert {k: v for k, v in defaults.items() if resolved[k] != v} == {}


def test_training_fields_are_declared_once():
    """CnnConfig and PropertyCnnConfig inherit the shared fields: same type and help, their own defaults."""
    shared = {f.name: f for f in dataclasses.fields(TrainingSettings)}
    assert {"seed", "width_multiplier", "learning_rate", "train_batch_size", "eval_batch_size", "max_epochs",
            "patience", "cosine_t_max", "num_threads"} <= set(shared)
    base_hints = typing.get_type_hints(TrainingSettings)
    for cls in (CnnConfig, PropertyCnnConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for name, field in shared.items():
            assert hints[name] is base_hints[name] and fields[name].metadata == field.metadata, (cls, name)
    assert (CnnConfig().width_multiplier, PropertyCnnConfig().width_multiplier) == (0.25, 0.5)
    assert CnnConfig().train_batch_size == PropertyCnnConfig().train_batch_size == shared["train_batch_size"].default
    with pytest.raises(TypeError, match="not a TrainingSettings field"):
        class Odd(TrainingSettings, no_such_field=1):
            pass
