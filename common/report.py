"""One self-contained HTML report per pipeline run: `reports/<run-id>/index.html`.

Every stage writes its own CSVs, grids and plots; the report only collects them. Each section lists the files it
shows as glob patterns relative to the repository root; files that do not exist (a stage not run yet) are listed
as missing instead of breaking the page. Images are copied into the run folder and referenced relatively, so the
folder can be copied and opened anywhere.
"""

from __future__ import annotations

import csv
import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from common.fileio import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = "assets"
MAX_TABLE_ROWS = 40


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


SECTIONS: tuple[Section, ...] = (
    Section("1. Generated faces (base generator)",
            images=("stylegan/synthesize_results_grid.png",),
            configs=("stylegan/synthesize_results/generation_config.json",)),
    Section("2. Gender / quality filter",
            images=("cnn/funnel.png", "cnn/kept_vs_rejected.png", "stylegan/synthesize_results_filtered_grid.png"),
            tables=("cnn/log/train_log_*.csv",),
            configs=("cnn/log/cnn_config.json",)),
    Section("3. Segmentation",
            images=("segmentation/segmentation_results_grid.png",),
            configs=("segmentation/segmentation_results/*config*.json",)),
    Section("4. Property scores",
            configs=("segmentation/property_score_results/*.config.json",)),
    Section("5. Property-score CNNs", text="Validation split: predicted vs target per property; per-epoch logs.",
            images=("property_score_cnn/train_logs/*.png",),
            tables=("property_score_cnn/train_logs/*.csv",),
            configs=("property_score_cnn/train_logs/*config*.json",)),
    Section("6. Fine-tuning v1 / v8", text="The teacher DCGAN, the base student, FineTune-v1 and FineTune-v8 side by "
            "side on the same seeds, with their variety (SD across faces of eye opening, mouth opening, yaw and roll "
            "from landmarks), sharpness, pixel diversity and the annotator's fractions, as ratios to the teacher and "
            "the base; then the curves of each run (variety as fractions of step 0) and the preview grid of the last "
            "logged step (rows: zero label, then each label at +2; columns: fixed z).",
            images=("runs/generator_variety/generator_variety.png", "runs/fine_tuning_v1/train_curves.png",
                    "runs/fine_tuning_v8/train_curves.png"),
            tables=("runs/generator_variety/generator_variety.csv",),
            latest=("runs/fine_tuning_v1/preview_*.png", "runs/fine_tuning_v8/preview_*.png"),
            configs=("runs/fine_tuning_v1/summary.json", "runs/fine_tuning_v8/summary.json",
                     "runs/fine_tuning_v1/evaluation_*.json", "runs/fine_tuning_v8/evaluation_*.json")),
    Section("7. The v8 dataset",
            images=("stylegan/generated_face_images_grid.png", "stylegan/generate_dataset/funnel.png",
                    "stylegan/generate_dataset/kept_vs_rejected.png", "segmentation/segmentation_results_v8_grid.png"),
            tables=("stylegan/generate_dataset/log/train_log_*.csv",),
            configs=("stylegan/generate_dataset/log/cnn_config.json",)),
    Section("8-9. VectorFind", text="SVM accuracy per (property, group), the evaluation's statistics graded by the "
            "property CNN and, for a sample of cases, by landmarks measured on the saved edits (r > 0: the edit moves "
            "the face the named way), plain vs conditional directions and layer ranges with leakage, pixel drift "
            "outside the property's box and the brightness / colour change of the face per unit edit, and one edit "
            "strip per property.",
            images=("vectorfind/v8/strips/*.png", "vectorfind/v8/summary.png"),
            tables=("vectorfind/v8/svm_accuracy.csv", "vectorfind/v8/image_generation_report/test_statistics.csv",
                    "vectorfind/v8/image_generation_report/landmark_grading.csv",
                    "vectorfind/v8/variant_comparison.csv"),
            columns={"variant_comparison.csv": ("variant", "cases", "passed", "eyes_mean_abs_r", "mouth_mean_abs_r",
                                                "pose_mean_abs_r", "eyes_drift_per_self", "mouth_drift_per_self",
                                                "eyes_brightness_levels", "mouth_brightness_levels",
                                                "pose_brightness_levels", "eyes_colour_levels")},
            configs=("vectorfind/v8/directions_info.json", "vectorfind/v8/*summary*.json",
                     "vectorfind/v8/image_generation_report/evaluation_summary.json")),
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
    for path in figures:
        src = _copy_asset(path, root, run_dir)
        label = html.escape(str(path.relative_to(root)))
        parts.append(f"<figure><img src='{src}' alt='{label}'><figcaption>{label}</figcaption></figure>")
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


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: .5em 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } figure { display: inline-block; margin: .5em; }
img { max-width: 100%; } figcaption, .note { font-size: 12px; color: #666; } .missing { color: #a33; }
pre { font-size: 12px; background: #f7f7f7; padding: .5em; }
"""


def build_report(run_dir: Path, profile: str, root: Path = REPO_ROOT,
                 sections: tuple[Section, ...] = SECTIONS) -> Path:
    """Write run_dir/index.html from the stage outputs under `root` and run_dir/stage_times.csv."""
    run_dir.mkdir(parents=True, exist_ok=True)
    times = run_dir / "stage_times.csv"
    body = [f"<h1>Pipeline run {html.escape(run_dir.name)}</h1>",
            f"<p>profile <b>{html.escape(profile)}</b>; every file below was written by the stage named in its "
            f"section (paths relative to the repository root).</p>",
            "<h2>Stage times and summaries</h2>",
            csv_table(times) if times.is_file() else "<p class='missing'>no stage times (report built alone)</p>"]
    body += [_section_html(section, root, run_dir) for section in sections]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Pipeline run {html.escape(run_dir.name)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    index = run_dir / "index.html"
    atomic_write_text(index, page)
    return index
