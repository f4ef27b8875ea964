"""One self-contained HTML report per pipeline run: `reports/<run-id>/index.html`.

Every stage writes its own CSVs, grids and plots; the report only collects them. The page opens with a summary (the
funnels, the property CNNs' validation r, the fine-tuning variety and steps, VectorFind's pass rate and |r|, the edit
strips): each value is read from one stage output named in SUMMARY and shown beside its path, "not run yet" where
the file is missing. The stage-by-stage detail follows: each section lists the files it shows as glob patterns
relative to the output root; files that do not exist (a stage not run yet) are listed as missing instead of breaking
the page. Images are copied into the run folder and referenced relatively, so the folder can be copied and opened
anywhere.
"""

from __future__ import annotations

import csv
import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common import artifacts
from common.fileio import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = "assets"
MAX_TABLE_ROWS = 40
NOT_RUN = "not run yet"


@dataclass(frozen=True)
class Section:
    title: str
    text: str = ""
    images: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()
    latest: tuple[str, ...] = ()  # image patterns of which only the last match (by name) is shown
    # Columns to show for wide CSVs (all when empty); rows beyond MAX_TABLE_ROWS are cut and said so.
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)


F, V8, VF = artifacts.FACES, artifacts.V8_FACES, artifacts.VECTORFIND
V1_RUN, V8_RUN = artifacts.FINE_TUNE["v1"].run_dir, artifacts.FINE_TUNE["v8"].run_dir
SECTIONS: tuple[Section, ...] = (
    Section("1. Generated faces (base generator)",
            images=(artifacts.grid_png(F.images),),
            configs=(f"{F.images}/{artifacts.GENERATION_CONFIG_FILE}",)),
    Section("2. Gender / quality filter",
            images=(F.cnn_funnel, F.cnn_report_grid, artifacts.grid_png(F.filtered)),
            tables=(f"{F.cnn_log}/train_log_*.csv",),
            configs=(f"{F.cnn_log}/{artifacts.CNN_CONFIG_FILE}",)),
    Section("3. Segmentation",
            images=(artifacts.grid_png(F.segmentation),),
            configs=(f"{F.segmentation}/*config*.json",)),
    Section("4. Property scores",
            configs=(f"{F.property_scores}/*.config.json",)),
    Section("5. Property-score CNNs", text="Validation split: predicted vs target per property; per-epoch logs.",
            images=(f"{artifacts.PROPERTY_CNN_LOGS}/*.png",),
            tables=(f"{artifacts.PROPERTY_CNN_LOGS}/*.csv",),
            configs=(f"{artifacts.PROPERTY_CNN_LOGS}/*config*.json",)),
    Section("6. Fine-tuning v1 / v8", text="The teacher DCGAN, the base student, FineTune-v1 and FineTune-v8 side by "
            "side on the same seeds, with their variety (SD across faces of eye opening, mouth opening, yaw and roll "
            "from landmarks), sharpness, pixel diversity and the annotator's fractions, as ratios to the teacher and "
            "the base; then the curves of each run (variety as fractions of step 0) and the preview grid of the last "
            "logged step (rows: zero label, then each label at +2; columns: fixed z).",
            images=(artifacts.GENERATOR_VARIETY_PNG, f"{V1_RUN}/{artifacts.TRAIN_CURVES_FILE}",
                    f"{V8_RUN}/{artifacts.TRAIN_CURVES_FILE}"),
            tables=(artifacts.GENERATOR_VARIETY_CSV,),
            latest=(f"{V1_RUN}/preview_*.png", f"{V8_RUN}/preview_*.png"),
            configs=(f"{V1_RUN}/{artifacts.RUN_SUMMARY_FILE}", f"{V8_RUN}/{artifacts.RUN_SUMMARY_FILE}",
                     f"{V1_RUN}/evaluation_*.json", f"{V8_RUN}/evaluation_*.json")),
    Section("7. The v8 dataset",
            images=(artifacts.grid_png(V8.images), V8.cnn_funnel, V8.cnn_report_grid, artifacts.grid_png(V8.segmentation)),
            tables=(f"{V8.cnn_log}/train_log_*.csv",),
            configs=(f"{V8.cnn_log}/{artifacts.CNN_CONFIG_FILE}",)),
    Section("8-9. VectorFind", text="SVM accuracy per (property, group), the evaluation's statistics graded by the "
            "property CNN and, for a sample of cases, by landmarks measured on the saved edits (r > 0: the edit moves "
            "the face the named way), plain vs conditional directions and layer ranges with leakage, pixel drift "
            "outside the property's box and the brightness / colour change of the face per unit edit, and one edit "
            "strip per property.",
            images=(f"{VF}/{artifacts.STRIPS_DIR}/*.png", f"{VF}/{artifacts.SUMMARY_PNG_FILE}"),
            tables=(f"{VF}/{artifacts.SVM_ACCURACY_FILE}",
                    f"{VF}/{artifacts.EVALUATION_DIR}/{artifacts.TEST_STATISTICS_FILE}",
                    f"{VF}/{artifacts.EVALUATION_DIR}/{artifacts.LANDMARK_GRADING_FILE}",
                    f"{VF}/{artifacts.VARIANT_COMPARISON_FILE}"),
            columns={artifacts.VARIANT_COMPARISON_FILE: (
                "variant", "cases", "passed", "eyes_mean_abs_r", "mouth_mean_abs_r", "pose_mean_abs_r",
                "eyes_drift_per_self", "mouth_drift_per_self", "eyes_landmark_self_sd", "mouth_landmark_self_sd",
                "pose_landmark_self_sd", "eyes_drift_per_landmark_sd", "mouth_drift_per_landmark_sd",
                "eyes_brightness_levels", "mouth_brightness_levels",
                "pose_brightness_levels", "eyes_colour_levels")},
            configs=(f"{VF}/{artifacts.DIRECTIONS_INFO_FILE}", f"{VF}/*summary*.json", artifacts.EVALUATION_SUMMARY)),
)


def _matches(pattern: str, root: Path) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.is_file())


def _asset_name(path: Path, root: Path) -> str:
    return str(path.relative_to(root)).replace("/", "__")


def _copy_asset(path: Path, root: Path, run_dir: Path) -> str:
    name = _asset_name(path, root)
    target = run_dir / ASSETS / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return f"{ASSETS}/{name}"


def _figure_html(path: Path, root: Path, run_dir: Path) -> str:
    src = _copy_asset(path, root, run_dir)
    label = html.escape(str(path.relative_to(root)))
    return f"<figure><img src='{src}' alt='{label}'><figcaption>{label}</figcaption></figure>"


def csv_table(path: Path, columns: tuple[str, ...] = (), max_rows: int = MAX_TABLE_ROWS) -> str:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return f"<p class='missing'>{html.escape(str(path))}: empty</p>"
    header, body = rows[0], rows[1:]
    keep = [i for i, name in enumerate(header) if not columns or name in columns]
    cut = len(body) - max_rows
    out = ["<table><tr>", *(f"<th>{html.escape(header[i])}</th>" for i in keep), "</tr>"]
    for row in body[:max_rows]:
        out.append("<tr>" + "".join(f"<td>{html.escape(row[i]) if i < len(row) else ''}</td>" for i in keep) + "</tr>")
    out.append("</table>")
    if cut > 0:
        out.append(f"<p class='note'>{cut} more rows in the file</p>")
    return "".join(out)


def _section_html(section: Section, root: Path, run_dir: Path) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.text:
        parts.append(f"<p>{html.escape(section.text)}</p>")
    figures = [path for pattern in section.images for path in _matches(pattern, root)]
    figures += [matches[-1] for pattern in section.latest if (matches := _matches(pattern, root))]
    found_any = bool(figures)
    parts += [_figure_html(path, root, run_dir) for path in figures]
    for pattern in section.tables:
        for path in _matches(pattern, root):
            found_any = True
            columns = section.columns.get(path.name, ())
            parts.append(f"<h3>{html.escape(str(path.relative_to(root)))}</h3>{csv_table(path, columns)}")
    for pattern in section.configs:
        for path in _matches(pattern, root):
            found_any = True
            try:
                text = json.dumps(json.loads(path.read_text()), indent=2)
            except (OSError, ValueError):
                text = f"(not readable JSON: {path})"
            parts.append(f"<details><summary>config: {html.escape(str(path.relative_to(root)))}</summary>"
                         f"<pre>{html.escape(text)}</pre></details>")
    if not found_any:
        parts.append("<p class='missing'>no outputs of this stage yet</p>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# The summary at the top of the page: a few numbers, each read from one file a stage writes


@dataclass(frozen=True)
class Reader:
    how: str                     # what of the file the value is, shown beside its path
    read: Callable[[Path], str]  # the file (or folder) -> the value as shown


@dataclass(frozen=True)
class Fact:
    label: str   # what the value is
    path: str    # the file or folder it is read from, relative to the output root
    reader: Reader


@dataclass(frozen=True)
class SummaryGroup:
    title: str
    facts: tuple[Fact, ...] = ()
    images: tuple[str, ...] = ()  # glob patterns of images shown under the group's table


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _row(rows: list[dict[str, str]], column: str, value: str) -> dict[str, str]:
    for row in rows:
        if row.get(column) == value:
            return row
    raise KeyError(f"no row with {column} = {value}")


def _pairs(values: dict[str, Any], digits: int = 3) -> str:
    if not values:
        raise ValueError("no values")
    return ", ".join(f"{name} {float(value):.{digits}f}" for name, value in values.items())


def _json(how: str, show: Callable[[Any], str]) -> Reader:
    return Reader(how, lambda path: show(json.loads(path.read_text())))


def _count_files(pattern: str) -> Reader:
    return Reader(f"{pattern} files", lambda folder: str(sum(1 for p in folder.glob(pattern) if p.is_file())))


CSV_ROWS = Reader("data rows", lambda path: str(len(_csv_rows(path))))


def _best_epoch_r(path: Path) -> str:
    """The *_score_corr columns at the epoch of the lowest criterion, the one whose weights the stage saves."""
    rows = _csv_rows(path)
    if not rows:
        raise ValueError("no epochs logged")
    best = min(rows, key=lambda row: float(row["criterion"]))  # min keeps the first of equal ones, as training does
    suffix = "_score_corr"
    return f"epoch {best['epoch']}: " + _pairs({k[:-len(suffix)]: v for k, v in best.items() if k.endswith(suffix)})


def _variety_vs_base(generator: str) -> Reader:
    suffix = "_sd_vs_base"

    def read(path: Path) -> str:
        row = _row(_csv_rows(path), "generator", generator)
        return _pairs({k[:-len(suffix)].replace("_", " "): v for k, v in row.items() if k.endswith(suffix)}, 2)
    return Reader(f"row {generator}, columns *{suffix}", read)


def _fine_tuning_run(summary: dict) -> str:
    done = "" if summary.get("finished") else " (not finished)"
    return (f"{summary['step']} steps, {summary['train_seconds'] / 60:.1f} min of training on {summary['images']} "
            f"images{done}")


def _pass_rate(summary: dict) -> str:
    return (f"{summary['passed']} of {summary['cases']} cases pass ({100 * summary['pass_rate']:.1f} %; "
            f"|r| thresholds {_pairs(summary['thresholds'], 2)})")


def _landmarks(key: str) -> Callable[[dict], str]:
    def show(summary: dict) -> str:
        grading = summary.get("landmark_grading")
        if not grading:
            return "not graded (no landmark_grading entry)"
        return f"{_pairs(grading[key], 2 if key == 'right_way' else 3)} ({grading['cases']} cases)"
    return show


SUMMARY_EVALUATION = artifacts.EVALUATION_SUMMARY
PNG_FILES = _count_files("*.png")
FACE_CROPS = _count_files("face_*.png")
BEST_EPOCH_R = Reader("*_score_corr at the lowest criterion", _best_epoch_r)
FINE_TUNING_RUN = _json("step, train_seconds, images, finished", _fine_tuning_run)

SUMMARY: tuple[SummaryGroup, ...] = (
    SummaryGroup("Funnels", (
        Fact("stage 2: images generated (scored by the filter)", F.cnn_scores_csv, CSV_ROWS),
        Fact("stage 2: kept by the gender / quality filter", F.filtered, PNG_FILES),
        Fact("stage 3: faces found (face crops)", F.segmentation, FACE_CROPS),
        Fact("stage 7: v8 images generated (scored by the filter)", V8.cnn_scores_csv, CSV_ROWS),
        Fact("stage 7: v8 images kept by the filter", V8.filtered, PNG_FILES),
        Fact("stage 7: v8 faces found (face crops)", V8.segmentation, FACE_CROPS))),
    SummaryGroup("Property CNNs: validation r (predicted vs target) of the saved epoch", (
        Fact("seven-property CNN", f"{artifacts.PROPERTY_CNN_LOGS}/{artifacts.SEVEN_CNN_LOG}", BEST_EPOCH_R),
        Fact("hairstyle CNN", f"{artifacts.PROPERTY_CNN_LOGS}/{artifacts.HAIRSTYLE_CNN_LOG}",
             BEST_EPOCH_R))),
    SummaryGroup("Fine-tuning: variety (SD across faces) as a fraction of the base generator's, and the run", (
        Fact("FineTune-v1 variety / base", artifacts.GENERATOR_VARIETY_CSV, _variety_vs_base("v1")),
        Fact("FineTune-v8 variety / base", artifacts.GENERATOR_VARIETY_CSV, _variety_vs_base("v8")),
        Fact("FineTune-v1 run", f"{V1_RUN}/{artifacts.RUN_SUMMARY_FILE}", FINE_TUNING_RUN),
        Fact("FineTune-v8 run", f"{V8_RUN}/{artifacts.RUN_SUMMARY_FILE}", FINE_TUNING_RUN))),
    SummaryGroup("VectorFind (FineTune-v8's w space) and one edit strip per property", (
        Fact("direction kind", f"{VF}/{artifacts.DIRECTIONS_INFO_FILE}",
             _json("settings.direction_kind", lambda info: str(info["settings"]["direction_kind"]))),
        Fact("graded by the property CNN: pass rate", SUMMARY_EVALUATION,
             _json("passed, cases, pass_rate", _pass_rate)),
        Fact("graded by the property CNN: mean |r| per property", SUMMARY_EVALUATION,
             _json("mean_abs_corr", lambda summary: _pairs(summary["mean_abs_corr"]))),
        Fact("graded by landmarks: mean |r| per property", SUMMARY_EVALUATION,
             _json("landmark_grading.mean_abs_corr", _landmarks("mean_abs_corr"))),
        Fact("graded by landmarks: fraction edited the right way (r > 0)", SUMMARY_EVALUATION,
             _json("landmark_grading.right_way", _landmarks("right_way")))),
        images=(f"{VF}/{artifacts.STRIPS_DIR}/strip_*.png",)),
)
# What a damaged or half-written file raises while a reader reads it: shown in its row, never raised.
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, csv.Error)


def _fact_value(fact: Fact, root: Path) -> str:
    path = root / fact.path
    if not path.exists():
        return f"<span class='missing'>{NOT_RUN}</span>"
    try:
        return html.escape(fact.reader.read(path))
    except READ_ERRORS as exc:
        return f"<span class='missing'>not readable ({html.escape(f'{type(exc).__name__}: {exc}')})</span>"


def summary_html(root: Path, run_dir: Path, groups: tuple[SummaryGroup, ...] = SUMMARY) -> str:
    parts = ["<div class='summary'><h2>Summary</h2>",
             "<p class='note'>Each value is read from the file beside it (paths relative to the output root); "
             "the stage-by-stage detail follows.</p>"]
    for group in groups:
        parts.append(f"<h3>{html.escape(group.title)}</h3>")
        if group.facts:
            parts.append("<table>" + "".join(
                f"<tr><td>{html.escape(fact.label)}</td><td class='value'>{_fact_value(fact, root)}</td>"
                f"<td class='note'>{html.escape(fact.path)} ({html.escape(fact.reader.how)})</td></tr>"
                for fact in group.facts) + "</table>")
        for pattern in group.images:
            figures = _matches(pattern, root)
            parts += [_figure_html(path, root, run_dir) for path in figures]
            if not figures:
                parts.append(f"<p><span class='missing'>{NOT_RUN}</span> "
                             f"<span class='note'>({html.escape(pattern)})</span></p>")
    parts.append("</div>")
    return "\n".join(parts)


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: .5em 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } figure { display: inline-block; margin: .5em; }
img { max-width: 100%; } figcaption, .note { font-size: 12px; color: #666; } .missing { color: #a33; }
pre { font-size: 12px; background: #f7f7f7; padding: .5em; }
.summary { border: 1px solid #ccc; padding: 0 1em .5em; margin-bottom: 2em; background: #fcfcfc; }
.summary h3 { margin: .8em 0 .2em; font-size: 15px; } .summary table { width: 100%; }
.summary td { text-align: left; } .summary td:first-child { width: 27%; } .summary td.note { width: 38%; }
.summary .value { font-weight: bold; }
"""


def build_report(run_dir: Path, profile: str, root: Path = REPO_ROOT,
                 sections: tuple[Section, ...] = SECTIONS, summary: tuple[SummaryGroup, ...] = SUMMARY) -> Path:
    """Write run_dir/index.html from the stage outputs under `root` and run_dir/stage_times.csv: the summary, then
    the stage times and the sections."""
    run_dir.mkdir(parents=True, exist_ok=True)
    times = run_dir / "stage_times.csv"
    body = [f"<h1>Pipeline run {html.escape(run_dir.name)}</h1>",
            f"<p>profile <b>{html.escape(profile)}</b>; every file below was written by the stage named in its "
            f"section (paths relative to the output root).</p>",
            summary_html(root, run_dir, summary),
            "<h2>Stage times and summaries</h2>",
            csv_table(times) if times.is_file() else "<p class='missing'>no stage times (report built alone)</p>"]
    body += [_section_html(section, root, run_dir) for section in sections]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Pipeline run {html.escape(run_dir.name)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    index = run_dir / "index.html"
    atomic_write_text(index, page)
    return index
