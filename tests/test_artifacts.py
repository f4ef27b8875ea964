"""Every output path is written in exactly one place: common/artifacts.py.

The check reads every string literal of the project's code (not docstrings, which describe the files to users; not the
tests, which pin the original's layout) and every value of the profiles, and fails on any that spells an output path
or one of the file names artifacts.py declares. The model files a user supplies (artifacts.SUPPLIED_MODELS) are named
once in code too; a profile may name them, since choosing the checkpoint is what a profile is for.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from common import artifacts
from common.config import read_profile, resolve_config
from common.paths import REPO_ROOT

CODE_DIRS = ("common", "stylegan", "stylegan_modified", "cnn", "segmentation", "property_score_cnn", "vectorfind",
             "face_app", "bench")


def _declared(supplied: bool = True) -> tuple[set[str], set[str]]:
    """(paths with a folder, bare file / folder names) that artifacts.py declares (without the supplied model files
    when `supplied` is False)."""
    values: list[str] = []
    for name in dir(artifacts):
        value = getattr(artifacts, name)
        if isinstance(value, str):
            values.append(value)
        elif isinstance(value, artifacts.FaceSet):
            values += [getattr(value, f) for f in value.__dataclass_fields__]
        elif isinstance(value, dict) and name in ("FINE_TUNE", "SCORE_FILES"):
            for item in value.values():
                values += [item] if isinstance(item, str) else [item.run_dir, item.generator, item.discriminator]
    paths = {v for v in values if "/" in v and (supplied or v not in artifacts.SUPPLIED_MODELS)}
    names = {v for v in values if "/" not in v and "." in v and len(v) > 8}  # file names such as all_scores_v2.csv
    names |= {v for v in values if v in (artifacts.VECTORS_DIR, artifacts.EVALUATION_DIR,
                                          artifacts.SELECTED_EVALUATION_DIR)}
    return paths, names


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _code_strings() -> list[tuple[str, int, str]]:
    files = sorted(REPO_ROOT.glob("*.py"))
    for folder in CODE_DIRS:
        files += sorted((REPO_ROOT / folder).rglob("*.py"))
    found = []
    for path in files:
        if path.name == "artifacts.py" and path.parent.name == "common":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found.append((path.relative_to(REPO_ROOT).as_posix(), node.lineno, node.value))
    return found


def _spells(text: str, paths: set[str], names: set[str]) -> str | None:
    for path in paths:
        if path in text:
            return path
    return text if text in names else None


def test_no_code_outside_artifacts_spells_an_output_path():
    paths, names = _declared()
    assert len(paths) > 30 and len(names) > 10  # the check would be empty if the declaration walk broke
    offenders = [f"{file}:{line}: {value!r} spells {hit!r}" for file, line, value in _code_strings()
                 if (hit := _spells(value, paths, names))]
    assert not offenders, "\n".join(offenders)


def _toml_strings(data, where: str):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _toml_strings(value, f"{where}.{key}")
    elif isinstance(data, list):
        for value in data:
            yield from _toml_strings(value, where)
    elif isinstance(data, str):
        yield where, data


def test_no_profile_spells_an_output_path():
    paths, names = _declared(supplied=False)
    offenders = []
    for toml in sorted((REPO_ROOT / "configs").rglob("*.toml")):
        data = tomllib.loads(toml.read_text())
        offenders += [f"{toml.relative_to(REPO_ROOT)}: {key} = {value!r}" for key, value in _toml_strings(data, "")
                      if _spells(value, paths, names)]
    assert not offenders, "\n".join(offenders)


def test_the_check_finds_a_spelled_path(tmp_path):
    """The detector itself: a literal output path and a declared file name are found, a docstring is not."""
    paths, names = _declared()
    assert _spells("stylegan/synthesize_results_filtered/000001.png", paths, names)
    assert _spells("all_scores_v2.csv", paths, names)
    assert _spells("stylegan/models/embedded_stylegan_64.pth", paths, names)  # shipped: named once in code
    assert not _spells("stylegan/models/embedded_stylegan_64.pth", *_declared(supplied=False))  # a profile may
    assert not _spells("docs/edit_strips.png", paths, names)
    tree = ast.parse('"""segmentation/segmentation_results"""\nX = "cnn/models"\n')
    docstrings = _docstring_nodes(tree)
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docstrings]
    assert literals == ["cnn/models"]


def test_named_runs_take_their_paths_from_artifacts():
    """--stage v8_dataset and --version v8 get the v8 folders without the profile spelling them."""
    from cnn.config import CnnConfig
    from segmentation.segmentation_stage import SegmentationConfig
    from stylegan.generate import GeneratorConfig
    from stylegan_modified.config import FineTuneConfig

    for profile in ("embedded", "celeba256"):
        assert "checkpoint" not in read_profile(profile).get("v8_dataset", {}).get("generator", {})
        gen = resolve_config(GeneratorConfig, "generator", profile=profile, stage="v8_dataset")
        assert (gen.checkpoint, gen.output_dir) == (artifacts.FINE_TUNE["v1"].generator, artifacts.V8_FACES.images)
        cnn = resolve_config(CnnConfig, "cnn", profile=profile, stage="v8_dataset")
        assert (cnn.images_dir, cnn.filtered_dir) == (artifacts.V8_FACES.images, artifacts.V8_FACES.filtered)
        seg = resolve_config(SegmentationConfig, "segmentation", profile=profile, stage="v8_dataset")
        assert (seg.input_dir, seg.output_dir) == (artifacts.V8_FACES.filtered, artifacts.V8_FACES.segmentation)
        v8 = resolve_config(FineTuneConfig, "fine_tuning", profile=profile, stage="v8")
        assert (v8.version, v8.init_checkpoint, v8.export_generator, v8.labels_path()) == (
            "v8", artifacts.FINE_TUNE["v1"].generator, artifacts.FINE_TUNE["v8"].generator, "")
        v1 = resolve_config(FineTuneConfig, "fine_tuning", profile=profile)
        assert v1.export_generator == artifacts.FINE_TUNE["v1"].generator
        assert v1.labels_path() == artifacts.FACES.scores_csv("v2" if profile == "embedded" else "v1")


def test_a_profile_value_still_overrides_a_named_runs_path(monkeypatch, tmp_path):
    """[stage.section] in a profile goes over the run's artifact paths (a user can move one folder)."""
    from common import config as config_module
    from segmentation.segmentation_stage import SegmentationConfig

    (tmp_path / "custom.toml").write_text('[v8_dataset.segmentation]\noutput_dir = "elsewhere/seg"\n')
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    seg = resolve_config(SegmentationConfig, "segmentation", profile="custom", stage="v8_dataset")
    assert (seg.input_dir, seg.output_dir) == (artifacts.V8_FACES.filtered, "elsewhere/seg")


def test_outputs_list_every_declared_folder():
    """make clean-outputs (OUTPUTS) covers every folder a stage writes, and keeps KEPT."""
    listed = {p for _, patterns in artifacts.OUTPUTS for p in patterns}
    for face_set in (artifacts.FACES, artifacts.V8_FACES):
        for folder in (face_set.images, face_set.filtered, face_set.segmentation, face_set.property_scores):
            assert folder in listed
    assert {artifacts.VECTORFIND, artifacts.VECTORFIND_MEDIANS, artifacts.PROPERTY_CNN_MODELS} <= listed
    assert not set(artifacts.KEPT) & listed
    assert Path(artifacts.FACES.labels_csv).parent.as_posix() not in listed  # the folder holding kept labels


def test_stage7_filter_starts_from_stage2_models_by_fold_number():
    """celeba256's v8 filter starts gender and quality from stage 2's fold-0 models (init_from_stage2_fold = 0)."""
    from cnn.config import CnnConfig

    cnn = resolve_config(CnnConfig, "cnn", profile="celeba256", stage="v8_dataset")
    assert cnn.rule("gender").init_from == artifacts.fold_model(artifacts.FACES.cnn_models, "gender", 0)
    assert cnn.rule("quality").init_from == "cnn/models/quality_model_0.pt"  # the original's file
    assert cnn.rule("age").init_from == ""
