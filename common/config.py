"""Profiles: one TOML file per profile under configs/, one typed section per stage.

Each stage package declares a dataclass for its section (its fields are the stage's
options with their types). `add_config_arguments` turns every field into a
`--field-name` flag, `resolve_config` reads `configs/<profile>.toml`, applies the
flags that were given, validates types once, and `dump_config` writes the result
beside the stage's outputs so a result can always be traced back to how it was made.

A profile may also hold named runs of the pipeline: `--stage NAME` merges the table
`[NAME.section]` over `[section]` (e.g. `[v8_dataset.cnn]` over `[cnn]`), so a second
pass of stages 1-4 on another generator is one config section, not a copy of the scripts.
The stage name is recorded in the dumped config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from common import artifacts, locks
from common.errors import PipelineError
from common.fileio import atomic_write_text

from common.paths import REPO_ROOT, OUTPUT_ROOT_ENV, output_root, quick_root, resolve_repo_path, set_output_root  # noqa: F401 (re-exported)

CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_PROFILE = "embedded"
QUICK_DIR = "quick"  # configs/quick/<profile>.toml: the sizes of a quick run, merged over the profile

T = TypeVar("T")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


QUICK_ENV = "OHLORA_QUICK"


def quick_enabled() -> bool:
    """Whether this process (and its children) run the quick variant: `--quick`, inherited through OHLORA_QUICK."""
    return os.environ.get(QUICK_ENV, "") == "1"


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`, table by table (a value that is not a table replaces)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path}: not valid TOML ({exc}); fix the file") from None


def read_profile(profile: str, quick: bool | None = None) -> dict[str, Any]:
    """configs/<profile>.toml; for the quick variant with configs/quick/<profile>.toml merged over it."""
    path = CONFIG_DIR / f"{profile}.toml"
    if not path.is_file():
        raise PipelineError(
            f"unknown profile '{profile}' ({path} not found); choose one of: {', '.join(available_profiles())}")
    data = _load_toml(path)
    if quick_enabled() if quick is None else quick:
        quick_path = CONFIG_DIR / QUICK_DIR / f"{profile}.toml"
        if not quick_path.is_file():
            raise PipelineError(f"profile '{profile}' has no quick variant ({quick_path} not found)")
        data = merge_tables(data, _load_toml(quick_path))
    return data


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    """The runtime types a dataclass field annotation accepts (None included for Optional)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(annotation):
            out += _allowed_types(arg)
        return out
    if annotation is type(None) or annotation is None:
        return (type(None),)
    if origin is not None:
        return (origin,)
    if annotation is float:
        return (float, int)
    return (annotation,)


def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    hints = typing.get_type_hints(cls)
    return {f.name: _allowed_types(hints[f.name]) for f in dataclasses.fields(cls)}


def _check_value(section: str, name: str, value: Any, allowed: tuple[type, ...], source: str) -> Any:
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    else:
        ok = isinstance(value, allowed)
    if not ok:
        names = " or ".join(t.__name__ for t in allowed)
        where = source if source.startswith("--") else f"{source}: [{section}] {name} ="
        raise PipelineError(f"{where} {value!r} must be {names}")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if list in allowed and isinstance(value, tuple):
        return list(value)
    return value


def build_section(cls: type[T], section: str, values: dict[str, Any], source: str) -> T:
    types_by_field = _field_types(cls)
    unknown = sorted(set(values) - set(types_by_field))
    if unknown:
        raise PipelineError(
            f"{source}: [{section}] has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(types_by_field)}")
    checked = {k: _check_value(section, k, v, types_by_field[k], source) for k, v in values.items()}
    try:
        config = cls(**checked)
    except TypeError as exc:
        raise PipelineError(f"{source}: [{section}] {exc}") from None
    check_choices(config, section)
    return config


def check_choices(config: Any, section: str) -> None:
    """Fields whose metadata lists "choices" hold one of them (the allowed values `--help` shows)."""
    for field in dataclasses.fields(config):
        allowed = field.metadata.get("choices")
        value = getattr(config, field.name)
        if allowed is not None and value not in allowed:
            names = list(map(str, allowed))
            expected = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
            raise PipelineError(f"[{section}] {field.name} must be {expected}, got {value!r}")


def _parse_flag_value(text: str, allowed: tuple[type, ...]) -> Any:
    """Flags arrive as strings; turn them into the field's type (JSON for lists)."""
    if type(None) in allowed and text.lower() in ("none", "null"):
        return None
    if bool in allowed:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
    if int in allowed and float not in allowed:
        try:
            return int(text)
        except ValueError:
            pass
    if float in allowed:
        try:
            return float(text)
        except ValueError:
            pass
    if list in allowed:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return [part for part in text.split(",") if part]
    if dict in allowed:  # a table: JSON on the command line
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise PipelineError(f"{text!r} is not a JSON object") from None
    return text


def _type_name(allowed: tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "integer", float: "number", str: "text", list: "list (JSON or a,b,c)",
             dict: "table (JSON)", type(None): "none"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in allowed if not (t is int and float in allowed)))


def _help_defaults(cls: type, section: str | None, argv: list[str] | None) -> tuple[str, dict[str, Any]]:
    """Which profile `--help` describes (its --profile / --stage / --quick on the command line) and the values that
    profile gives each field of the section (the dataclass default where it sets none)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--profile", default=DEFAULT_PROFILE)
    pre.add_argument("--stage", default=None)
    pre.add_argument("--quick", action="store_true")
    known, _ = pre.parse_known_args(argv)
    values = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    values.update({f.name: f.default_factory() for f in dataclasses.fields(cls)
                   if f.default_factory is not dataclasses.MISSING})
    label = known.profile + (f" --stage {known.stage}" if known.stage else "") + (" --quick" if known.quick else "")
    if section is None:
        return "dataclass", values
    try:
        data = read_profile(known.profile, known.quick or None)
        values.update(section_values(data, section, known.stage, f"configs/{known.profile}.toml"))
    except PipelineError:
        return "dataclass", values  # an unknown profile or stage: the run itself says so in one line
    return label, values


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, section: str | None = None,
                         argv: list[str] | None = None) -> None:
    """--profile, --dry-run and one --field-name flag per field of the stage's config dataclass. With `section`,
    each flag's help shows the value the profile named on the command line (default: embedded) gives it, its type
    and, where the field lists them (metadata "choices"), the allowed values."""
    parser.add_argument("--profile", default=DEFAULT_PROFILE,
                        help=f"model profile, a file under configs/ (default: {DEFAULT_PROFILE}; "
                             f"available: {', '.join(available_profiles())})")
    parser.add_argument("--stage", default=None, metavar="NAME",
                        help="a named run in the profile: [NAME.<section>] values override [<section>] "
                             "(e.g. --stage v8_dataset)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and the planned work, then exit")
    add_run_arguments(parser)
    label, defaults = _help_defaults(cls, section, argv)
    group = parser.add_argument_group(f"config overrides (default: the value of the profile, shown as {label}: ...)")
    hints = typing.get_type_hints(cls)
    existing = {a for action in parser._actions for a in action.option_strings}
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        if flag in existing:
            continue
        allowed = _allowed_types(hints[field.name])
        parts = [field.metadata["help"]] if field.metadata.get("help") else []
        choices = field.metadata.get("choices")
        parts.append(f"one of: {', '.join(map(str, choices))}" if choices else _type_name(allowed))
        if field.name in defaults:
            parts.append(f"{label}: {json.dumps(defaults[field.name])}")
        text = "; ".join(parts).replace("%", "%%")
        if allowed == (bool,):
            group.add_argument(flag, dest=field.name, default=None, action=argparse.BooleanOptionalAction, help=text)
        else:
            group.add_argument(flag, dest=field.name, default=None, metavar=field.name.upper(), help=text)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--quick and --output-root: which variant of the profile runs, and where its files go (every stage and the
    pipeline take both; children inherit them)."""
    parser.add_argument("--quick", action="store_true", default=None,
                        help=f"small sizes (configs/{QUICK_DIR}/<profile>.toml over the profile) in their own output "
                             f"root (default {quick_root('<profile>').relative_to(REPO_ROOT)}/)")
    parser.add_argument("--output-root", default=None, metavar="DIR",
                        help="folder the stages read and write their files in (default: the repository, or the quick "
                             "root with --quick); config paths are relative to it")


def apply_run_arguments(args: argparse.Namespace, profile: str) -> None:
    """Make --quick / --output-root this process's (and its children's) settings."""
    if getattr(args, "quick", None):
        os.environ[QUICK_ENV] = "1"
    root = getattr(args, "output_root", None)
    if root:
        set_output_root(root)
    elif getattr(args, "quick", None) and not os.environ.get(OUTPUT_ROOT_ENV):
        set_output_root(quick_root(profile))
    if locks.armed() and not getattr(args, "dry_run", False):
        locks.hold_output_lock(output_root())


def section_values(data: dict[str, Any], section: str, stage: str | None, source: str) -> dict[str, Any]:
    """[section], then for a named run its output paths (common/artifacts.py STAGE_PATHS) and [stage.section]."""
    values = dict(data.get(section, {}))
    if stage is None:
        return values
    named = data.get(stage, {})
    if not isinstance(named, dict) or (not named and stage not in artifacts.STAGE_PATHS):
        stages = sorted(k for k, v in data.items()
                        if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values()))
        raise PipelineError(f"{source}: no stage '{stage}' (no [{stage}.*] tables); "
                            f"choose one of: {', '.join(stages) or '(none defined)'}")
    override = named.get(section, {})
    if not isinstance(override, dict):
        raise PipelineError(f"{source}: [{stage}] {section} must be a table [{stage}.{section}]")
    values.update(artifacts.stage_paths(stage, section))
    values.update(override)
    return values


def resolve_config(cls: type[T], section: str, args: argparse.Namespace | None = None,
                   profile: str | None = None, stage: str | None = None, **overrides: Any) -> T:
    """Profile file values ([stage.section] over [section]), then command-line flags, then keyword
    overrides (used by tests)."""
    profile = profile or (getattr(args, "profile", None) if args is not None else None) or DEFAULT_PROFILE
    stage = stage or (getattr(args, "stage", None) if args is not None else None)
    if args is not None:
        apply_run_arguments(args, profile)
    data = read_profile(profile)
    values = section_values(data, section, stage, f"configs/{profile}.toml")
    types_by_field = _field_types(cls)
    if "profile" in types_by_field:
        values["profile"] = profile
    if args is not None:
        for name, allowed in types_by_field.items():
            raw = getattr(args, name, None)
            if raw is None or name == "profile":
                continue
            value = _parse_flag_value(raw, allowed) if isinstance(raw, str) else raw
            values[name] = _check_value(section, name, value, allowed, f"--{name.replace('_', '-')}")
    values.update(overrides)
    config = build_section(cls, section, values, f"configs/{profile}.toml")
    # Remembered outside the fields so every section's dump names the run it belongs to.
    object.__setattr__(config, STAGE_ATTRIBUTE, stage)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


STAGE_ATTRIBUTE = "_config_stage"


def config_to_dict(config: Any) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    stage = getattr(config, STAGE_ATTRIBUTE, None)
    if stage is not None:
        out["stage"] = stage
    if quick_enabled():
        out["variant"] = "quick"  # configs/quick/<profile>.toml was merged over the profile
    return out


def dump_config(config: Any, path: str | Path) -> Path:
    """Write the resolved options as JSON next to a stage's outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
    return path
