"""Every command shown in README.md and docs/*.md exists, with the flags shown.

Commands are taken from the shell code blocks (```bash, ```sh or unlabelled fences) and from inline code spans that
start with `python`, `.venv/bin/python` or `make`. Each `python <script>.py ...` line is run from the repository root
in a subprocess of the venv's Python, the lines of one script together in one interpreter (each as `__main__` with
its own sys.argv and captured output, so that torch is imported once per script rather than once per line):

* stage scripts (they all take --dry-run) run with `--dry-run` appended and must exit 0. A dry run that needs the
  outputs of an earlier stage, which a fresh checkout does not have, may instead fail with the scripts' one-line
  user error (exit 2, a single `error: ... not found` line, no traceback); which scripts may do so, and with which
  message, is listed in NEEDS_EARLIER_OUTPUTS. An unknown flag is argparse's exit 2 with a usage text and
  "unrecognized arguments": that always fails the test.
* scripts and modules without --dry-run (the pipeline runner, bench/, `python -m ...`) run with `--help` only, which
  must exit 0, and every flag of the shown command must appear in that help text (an appended --help would hide an
  unknown flag, so the flags are checked against the text).

`make X` lines must name targets of the Makefile, and every `--flag` written in inline code on these pages must be a
flag of one of the scripts (or of the few outside tools listed in OUTSIDE_FLAGS).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.is_file() else sys.executable
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Stage scripts built on common/config.py: they all take --dry-run.
DRY_RUN_SCRIPTS = {
    "run_original_generator.py", "run_cnn.py", "run_segmentation.py", "compute_property_scores.py",
    "run_property_score_cnn.py", "run_stylegan_fine_tuning.py", "run_vectorfind.py", "run_app.py",
}
# Dry runs that read an earlier stage's folder before they finish: in a fresh checkout they stop with this one-line
# error (exit 2). Any other failure of these scripts, and any failure of the others, fails the test.
NEEDS_EARLIER_OUTPUTS = {
    "run_segmentation.py": "input folder not found",
    "compute_property_scores.py": "segmentation folder not found",
}
# No --dry-run: checked with --help (exit 0) and their flags against the help text.
HELP_ONLY_SCRIPTS = {"run_pipeline.py"} | {f"bench/{p.name}" for p in (REPO / "bench").glob("*.py")}
HELP_ONLY_MODULES = {"cnn.glasses", "stylegan.train_embedded_base", "face_app.screenshot", "common.run_compare",
                     "common.outputs"}
# Flags of tools that are not this project's scripts, allowed in inline code.
OUTSIDE_FLAGS = {"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--no-deps", "--extra-index-url"}

PYTHON_TOKEN = re.compile(r"^(?:\S*/)?python(?:3(?:\.\d+)?)?$")
FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
INLINE_CODE = re.compile(r"`([^`\n]+)`")
FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")


@dataclass(frozen=True)
class Command:
    where: str          # file:line
    text: str           # the command as shown
    target: str         # script path relative to the repo, or "-m module"
    args: tuple[str, ...]

    @property
    def mode(self) -> str:
        if self.target.startswith("-m "):
            return "help" if self.target[3:] in HELP_ONLY_MODULES else "unknown"
        if self.target in DRY_RUN_SCRIPTS:
            return "dry-run"
        return "help" if self.target in HELP_ONLY_SCRIPTS else "unknown"

    def argv(self) -> tuple[str, ...]:
        """The command line to run, without the interpreter."""
        if self.mode == "dry-run":
            return (self.target, *self.args, "--dry-run")
        return (*self.target.split(" ", 1), "--help")


def shell_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of the shell code blocks, backslash continuations joined."""
    out, language, pending, start = [], None, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            language = None if language is not None else fence.group(1).lower()
            continue
        if language is None or language not in SHELL_LANGUAGES:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def inline_spans(path: Path) -> list[tuple[int, str]]:
    """(line number, span) of every inline code span outside code blocks."""
    out, in_block = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_block = not in_block
            continue
        if not in_block:
            out += [(number, span) for span in INLINE_CODE.findall(line)]
    return out


def inline_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, span) of inline code spans outside code blocks that are python or make commands."""
    return [(number, span) for number, span in inline_spans(path)
            if span.split() and (PYTHON_TOKEN.match(span.split()[0]) or span.split()[0] == "make")]


def parse(where: str, text: str) -> Command | None:
    """The python command in a shell line (also behind torchrun), or None for other lines."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError as exc:
        raise AssertionError(f"{where}: cannot split {text!r}: {exc}") from None
    for i, token in enumerate(tokens):
        if PYTHON_TOKEN.match(token) and i + 1 < len(tokens):
            if tokens[i + 1] == "-m" and i + 2 < len(tokens):
                return Command(where, text, f"-m {tokens[i + 2]}", tuple(tokens[i + 3:]))
            if tokens[i + 1].endswith(".py"):
                return Command(where, text, tokens[i + 1], tuple(tokens[i + 2:]))
        if token == "torchrun":
            script = next(j for j in range(i + 1, len(tokens)) if tokens[j].endswith(".py"))
            return Command(where, text, tokens[script], tuple(tokens[script + 1:]))
    return None


def collect() -> tuple[list[Command], list[tuple[str, str]]]:
    commands, makes = [], []
    for path in DOC_FILES:
        rel = path.relative_to(REPO)
        for number, line in shell_lines(path) + inline_commands(path):
            where = f"{rel}:{number}"
            words = shlex.split(line, comments=True) if line.strip() else []
            if words and words[0] == "make":
                makes.append((where, line))
                continue
            command = parse(where, line)
            if command is not None:
                commands.append(command)
    return commands, makes


COMMANDS, MAKE_LINES = collect()
# Each distinct command once (the same command may be shown on several pages).
UNIQUE: dict[tuple[str, ...], Command] = {}
for _command in COMMANDS:
    UNIQUE.setdefault((_command.target, *_command.args), _command)


# Runs a list of command lines in one interpreter, each as `python <script> ...` / `python -m <module> ...` would
# (run as __main__ with that sys.argv; stdout and stderr captured per command), so that torch is imported once per
# group instead of once per command. Prints one JSON line with each command's exit code and output.
DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
results = []
for argv in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = argv[1:] if argv[0] == "-m" else list(argv)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if argv[0] == "-m":
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.stdout.write("\n@@results@@" + json.dumps(results) + "\n")
"""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_group(argvs: list[tuple[str, ...]]) -> dict[tuple[str, ...], Result]:
    """Run command lines (argv without the interpreter) in one subprocess of the venv's Python at the repo root."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([PYTHON, "-c", DRIVER, json.dumps([list(a) for a in argvs])], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    marker = proc.stdout.rfind("@@results@@")
    assert proc.returncode == 0 and marker >= 0, f"driver failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    rows = json.loads(proc.stdout[marker + len("@@results@@"):].strip())
    return {argv: Result(**row) for argv, row in zip(argvs, rows)}


def run_all(argvs) -> dict[tuple[str, ...], Result]:
    """Group by script (each group one interpreter), a few groups at a time."""
    groups: dict[str, list[tuple[str, ...]]] = {}
    for argv in argvs:
        key = argv[0] if argv[0] in DRY_RUN_SCRIPTS else "help-only"
        groups.setdefault(key, []).append(tuple(argv))
    results: dict[tuple[str, ...], Result] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        for part in pool.map(run_group, groups.values()):
            results.update(part)
    return results


@pytest.fixture(scope="session")
def results() -> dict[tuple[str, ...], Result]:
    """Every distinct command once, plus each stage script's --help (for the inline flags)."""
    runnable = {command.argv() for command in UNIQUE.values() if command.mode != "unknown"}
    helps = {(script, "--help") for script in DRY_RUN_SCRIPTS}
    return run_all(sorted(runnable | helps))


def test_commands_found():
    shown = {command.target for command in COMMANDS}
    assert len(COMMANDS) >= 20, [c.text for c in COMMANDS]
    # Every stage script is shown somewhere with a command line.
    assert DRY_RUN_SCRIPTS | {"run_pipeline.py"} <= shown, sorted(DRY_RUN_SCRIPTS - shown)


@pytest.mark.parametrize("key", list(UNIQUE), ids=[f"{c.where} {c.target} {' '.join(c.args)}".strip()
                                                    for c in UNIQUE.values()])
def test_command(key, results):
    command = UNIQUE[key]
    assert command.mode != "unknown", (f"{command.where}: {command.target} is neither a stage script with --dry-run "
                                       f"nor listed as help-only in {Path(__file__).name}; decide how to check it")
    if not command.target.startswith("-m "):
        assert (REPO / command.target).is_file(), f"{command.where}: {command.target} does not exist"
    result = results[command.argv()]
    shown = f"{command.where}: `{command.text}` -> exit {result.returncode}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, shown
    assert "unrecognized arguments" not in result.stderr and "usage:" not in result.stderr, shown
    if command.mode == "help":
        assert result.returncode == 0, shown
        flags = {arg.split("=", 1)[0] for arg in command.args if arg.startswith("--")}
        for flag in flags:
            assert re.search(re.escape(flag) + r"(?![\w-])", result.stdout), \
                f"{command.where}: {flag} is not a flag of {command.target}:\n{result.stdout[-3000:]}"
        if "--steps" in command.args:       # run_pipeline.py: the step names must be listed in its help
            steps = command.args[command.args.index("--steps") + 1].split(",")
            for step in steps:
                assert step in result.stdout, f"{command.where}: no pipeline step {step!r}"
        return
    if result.returncode == 0:
        return
    expected = NEEDS_EARLIER_OUTPUTS.get(command.target)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert expected is not None and result.returncode == 2, shown
    # The one-line user error about a missing earlier output, and nothing else.
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], shown


def test_make_targets_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, flags=re.M))
    assert MAKE_LINES, "no make commands found"
    for where, line in MAKE_LINES:
        words = [w for w in shlex.split(line, comments=True)[1:] if "=" not in w and not w.startswith("-")]
        for word in words:
            assert word in targets, f"{where}: `{line}`: no make target {word!r} (targets: {sorted(targets)})"


def test_inline_flags_exist(results):
    """A `--flag` in inline code must be a flag of some script shown (e.g. no removed or renamed flags)."""
    known = set(OUTSIDE_FLAGS)
    for argv, result in results.items():
        if argv[-1] == "--help":
            assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stderr[-2000:]}"
            known |= set(FLAG.findall(result.stdout))
    unknown = []
    for path in DOC_FILES:
        for number, span in inline_spans(path):
            unknown += [f"{path.relative_to(REPO)}:{number}: {flag}" for flag in FLAG.findall(span)
                        if flag not in known]
    assert not unknown, "flags shown that no script has:\n" + "\n".join(unknown)


def _script_flags(script: Path) -> set[str]:
    done = subprocess.run([PYTHON, str(script), "--help"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script.name} --help:\n{done.stderr[-2000:]}"
    return set(FLAG.findall(done.stdout))


def test_profile_comments_name_existing_flags():
    """A `--flag` in a comment of configs/*.toml (e.g. `--device cpu|cuda[:N]`) is a flag of some stage script."""
    scripts = sorted(REPO.glob("run_*.py")) + [REPO / "compute_property_scores.py"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        known = set(OUTSIDE_FLAGS).union(*pool.map(_script_flags, scripts))
    unknown = []
    for toml in sorted((REPO / "configs").rglob("*.toml")):
        for number, line in enumerate(toml.read_text().splitlines(), 1):
            comment = line.split("#", 1)[1] if "#" in line else ""
            unknown += [f"{toml.relative_to(REPO)}:{number}: {flag}" for flag in FLAG.findall(comment)
                        if flag not in known]
    assert len(known) > 100  # every stage's flags were read
    assert not unknown, "flags named in profile comments that no script has:\n" + "\n".join(unknown)
