"""Stage 6: conditional StyleGAN fine-tuning, FineTune-v1 and FineTune-v8.

* v1 turns the profile's unconditioned base into a 7-label conditional generator: `mapping.label_weight`
  [7, 16] is new (N(0, 1)), `mapping.dense0` takes z ++ embedding (re-initialised, its bias loaded), D's
  last dense layer takes its features ++ the label (re-initialised, bias loaded); every other weight comes
  from the base. Only `mapping.*` and D's last three layers train, on the stage-2 filtered images with their
  7 stage-4 scores as labels.
* v8 continues from v1's G and D (strict load) with all-zero labels on the v8 dataset, training
  `mapping.*`, the 4x4 block (`synthesis.layer0`, `layer1`, `output0`) and the same D layers, and
  monitors classifier ensembles on fixed samples.
* Both can hold the spread of w to the starting mapping's (`w_spread_weight`, `w_spread_kind`): on a fixed batch
  of latents the trainable mapping's w may shift its mean freely, while a change of its spread (per-dimension SD,
  pairwise distances, or each sample's offset from the mean) is penalised - the collapse of faces to one pose and
  expression starts as a collapse of w. The monitor logs the variety figures of stylegan/variety.py (geometric
  SDs, sharpness, pixel diversity) of the EMA generator's fixed samples next to the classifier scores.

The recipe is the original's (non-saturating loss, R1 gamma 10, one D step then G steps until the
G loss falls below 2 x the D loss, at most 4; AdamW 1e-4), with its defects fixed on purpose: style
mixing only if asked, the EMA generator updated and saved as `generator_smooth`, a cosine schedule
only if asked (and then stepped once per epoch), everything seeded and resumable, fake labels taken
from the real batch (as the original) or sampled N(0, 1).

Discriminator layer names: the original's `layer12-14` are the 4x4 block of the 256 px D
(minibatch-stddev conv, dense, the last dense). At any resolution they are `layer{2B-2}`,
`layer{2B-1}`, `layer{2B}` with B = log2(resolution) - 1 blocks, so `layer8-10` at 64 px.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from common import artifacts
from common.checkpoints import read_weights
from common.config import dump_config
from common.devices import choose_device, set_torch_threads
from common.fileio import atomic_write_text
from common.paths import repo_relative, resolve_repo_path
from stylegan.gan_trainer import LOG_FILE, STATE_FILE, append_log, plot_log_curves, run_loop, trim_log
from stylegan.variety import FIGURE_KEYS
from stylegan_modified.config import FineTuneConfig
from stylegan_modified.dataset import load_dataset
from stylegan_modified.monitor import Classifier, load_classifiers, load_geometry
from stylegan_modified.trainer import FineTuner

LOG_PANELS = {"losses": ["d_loss", "d_adv_loss", "g_loss", "r1"], "D scores": ["real_scores_mean", "fake_scores_mean"],
              "real/fake AUROC": ["real_fake_auroc"], "G steps per D step": ["g_train_count"]}
VARIETY_RELATIVE_PANEL = "variety (fraction of step 0)"
VARIETY_PANELS = {VARIETY_RELATIVE_PANEL: [f"variety_{key}" for key in FIGURE_KEYS if key != "geometry_found"],
                  "w spread vs the start": ["w_spread", "ema_w_spread"]}


@dataclass
class RunSummary:
    step: int
    finished: bool
    train_seconds: float
    images: int
    run_dir: Path
    exported: list[Path]
    last_row: dict


def run_fine_tuning(config: FineTuneConfig, classifiers: dict[str, Classifier] | None = None, force: bool = False,
                    device: str | None = None, progress: bool = True, max_new_steps: int | None = None,
                    log: Callable[[str], None] = print, geometry="load") -> RunSummary:
    """Train (resuming from run_dir unless `force`) until max_steps or max_minutes, then export.
    `classifiers=None` loads the config's monitor ensembles (after the dataset, so its errors come first);
    `geometry="load"` the landmark model of the variety monitor (when monitor_variety), None: no geometric SDs.
    `device` None: the config's (common/devices.py; auto = cuda when available)."""
    device = choose_device(config.device if device is None else device)
    set_torch_threads(config.num_threads)
    run_dir = resolve_repo_path(config.run_dir)
    dataset = load_dataset(config.images_dir, config.labels_path(), config.resolution, log)
    if classifiers is None:
        classifiers = load_classifiers(config, log, str(device)) if config.monitor_every else {}
    if isinstance(geometry, str):
        geometry = load_geometry(log) if config.monitor_every and config.monitor_variety else None
    trainer = FineTuner(config, dataset, classifiers, device, geometry=geometry)
    open_run(trainer, run_dir, force, log)
    end = config.max_steps if max_new_steps is None else min(config.max_steps, trainer.step_index + max_new_steps)
    train(trainer, run_dir, end, progress)
    finished = trainer.step_index >= config.max_steps or out_of_time(trainer)
    exported = export_run(trainer, run_dir) if finished else []
    last = write_run_summary(trainer, run_dir, finished, exported)
    return RunSummary(trainer.step_index, finished, trainer.train_seconds, len(dataset.img_nos), run_dir, exported,
                      last)


def open_run(trainer: FineTuner, run_dir: Path, force: bool, log: Callable[[str], None] = print) -> None:
    """The run folder with the resolved config; its training state resumed (`force`: discarded first)."""
    state_path = run_dir / STATE_FILE
    if force and run_dir.is_dir():
        for stale in [state_path, run_dir / "train_log.csv", *run_dir.glob("preview_*.png")]:
            stale.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(trainer.config, run_dir / "config.json")
    if state_path.is_file():
        trainer.load_state_dict(read_weights(state_path), str(state_path))
        log(f"resuming {trainer.config.version} at step {trainer.step_index} "
            f"({trainer.train_seconds / 60:.1f} min trained)")
    trim_log(run_dir / LOG_FILE, trainer.step_index if state_path.is_file() else -1)


def out_of_time(trainer: FineTuner) -> bool:
    """The time budget (max_minutes; previews and monitor included) is spent."""
    budget = trainer.config.max_minutes * 60.0
    return budget > 0 and trainer.train_seconds + trainer.hook_seconds >= budget


def train(trainer: FineTuner, run_dir: Path, end: int, progress: bool = True) -> None:
    """Steps up to `end` (or the time budget): logged every log_every, monitored every monitor_every (and at step 0
    and the last step), a preview per log row, the state saved every checkpoint_every."""
    config = trainer.config
    if trainer.step_index == 0 and trainer.monitors and config.monitor_every:
        append_log(run_dir / LOG_FILE, [{"step": 0, **trainer.monitor()}])  # where the curves start
        trainer.save_preview(run_dir / "preview_000000.png")

    def on_log(step: int, row: dict) -> None:
        start = time.perf_counter()
        if config.monitor_every and (step % config.monitor_every == 0 or step == end or out_of_time(trainer)):
            row.update(trainer.monitor())
        trainer.save_preview(run_dir / f"preview_{step:06d}.png")
        trainer.hook_seconds += time.perf_counter() - start

    run_loop(trainer, end, run_dir, config.log_every, config.checkpoint_every, on_log=on_log,
             should_stop=(lambda: out_of_time(trainer)) if config.max_minutes > 0 else None, progress=progress,
             postfix={"d": "d_loss", "g": "g_loss", "auroc": "real_fake_auroc"})


def export_run(trainer: FineTuner, run_dir: Path) -> list[Path]:
    """The finished generator and discriminator files, and the training curves."""
    config = trainer.config
    trainer.export(config.export_generator, config.export_discriminator)
    panels = dict(LOG_PANELS)
    panels["monitor"] = [f"mean_{name}_score" for name in trainer.classifiers]
    panels.update(VARIETY_PANELS)
    plot_log_curves(run_dir / "train_log.csv", run_dir / artifacts.TRAIN_CURVES_FILE, panels, relative=(VARIETY_RELATIVE_PANEL,))
    return [resolve_repo_path(config.export_generator), resolve_repo_path(config.export_discriminator)]


def write_run_summary(trainer: FineTuner, run_dir: Path, finished: bool, exported: list[Path]) -> dict:
    """summary.json of the run; returns the last row of its train log ({} before the first)."""
    log_path = run_dir / "train_log.csv"
    last = pd.read_csv(log_path).iloc[-1].to_dict() if log_path.is_file() else {}
    atomic_write_text(run_dir / artifacts.RUN_SUMMARY_FILE, json.dumps(
        {"step": trainer.step_index, "train_seconds": round(trainer.train_seconds, 1),
         "images": len(trainer.dataset.img_nos), "finished": finished,
         "exported": [repo_relative(p) for p in exported]}, indent=2) + "\n")
    return last
