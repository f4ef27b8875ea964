"""Machinery shared by the project's GAN trainers (the embedded base distillation and fine-tuning v1 / v8).

* the non-saturating logistic losses and the (lazy) R1 penalty, `discriminator_step`;
* `frozen_requires_grad`: take a network out of the autograd graph for the other player's step and give
  every parameter back its own flag afterwards (fine-tuning freezes most of D for good);
* `update_ema`: the `generator_smooth` copy;
* `w_spread_penalty`: how far the spread of a trainable mapping's w has moved from a frozen reference's on the
  same fixed latents (fine-tuning's variety term: the mean of w may move, its spread should not);
* `rng_state` / `restore_rng_state`: everything random a resumed run must continue with;
* `run_loop`: step, average the step statistics into one log row every `log_every` steps, call the
  log / sample hooks, and every `checkpoint_every` steps append the rows to `train_log.csv` and save the
  full training state (so a killed run resumes from a state and a log that belong together).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from common.fileio import atomic_path

LOG_FILE = "train_log.csv"
STATE_FILE = "training_state.pt"


# --- losses ------------------------------------------------------------------------------------
def discriminator_adversarial_loss(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """mean softplus(D(fake)) + mean softplus(-D(real))."""
    return F.softplus(fake_score).mean() + F.softplus(-real_score).mean()


def generator_adversarial_loss(fake_score: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: mean softplus(-D(fake))."""
    return F.softplus(-fake_score).mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
    """Batch mean of |dD(real)/d real|^2, differentiable (create_graph) so D can be trained on it."""
    real = real.detach().requires_grad_(True)
    score = discriminator(real) if label is None else discriminator(real, label)
    (grad,) = torch.autograd.grad(score.sum(), real, create_graph=True)
    return grad.square().sum(dim=tuple(range(1, grad.ndim))).mean()


@dataclass
class DiscriminatorStep:
    adversarial_loss: float
    total_loss: float  # adversarial + the R1 term actually added this step
    real_scores: torch.Tensor  # detached [B]
    fake_scores: torch.Tensor
    r1: float | None  # None on steps without R1 (lazy regularisation)


def discriminator_step(discriminator: nn.Module, optimizer: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor, r1_gamma: float, apply_r1: bool, r1_weight: float = 1.0,
                       real_label: torch.Tensor | None = None, fake_label: torch.Tensor | None = None
                       ) -> DiscriminatorStep:
    """One D update on detached fakes. With lazy R1 the penalty is added every `interval` steps with
    `r1_weight = interval`, so its average strength is that of R1 on every step."""
    fake = fake.detach()
    if real_label is None:
        real_score, fake_score = discriminator(real), discriminator(fake)
    else:
        real_score, fake_score = discriminator(real, real_label), discriminator(fake, fake_label)
    d_loss = discriminator_adversarial_loss(real_score, fake_score)
    adversarial = float(d_loss.detach())
    r1_value = None
    if apply_r1 and r1_gamma > 0:
        r1 = r1_penalty(discriminator, real, real_label)
        d_loss = d_loss + r1_gamma / 2 * r1 * r1_weight
        r1_value = float(r1.detach())
    optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    optimizer.step()
    return DiscriminatorStep(adversarial, float(d_loss.detach()), real_score.detach().flatten(),
                             fake_score.detach().flatten(), r1_value)


@contextlib.contextmanager
def frozen_requires_grad(module: nn.Module) -> Iterator[None]:
    """No parameter of `module` requires grad inside the block; each gets its own flag back after."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def real_fake_auroc(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> float:
    """AUROC of D's scores with real = 1, fake = 0 (ties count half), by the rank-sum formula."""
    real = real_scores.double().flatten()
    fake = fake_scores.double().flatten()
    greater = (real[:, None] > fake[None, :]).double().sum()
    ties = (real[:, None] == fake[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(real) * len(fake)))


W_SPREAD_KINDS = ("sd", "pairwise", "centred")


def w_spread_penalty(w: torch.Tensor, w_ref: torch.Tensor, kind: str = "centred") -> torch.Tensor:
    """0 when the batch `w` [N, D] is spread as the reference `w_ref` (the same latents through the starting
    mapping), whatever the shift of its mean; positive otherwise. Scale-free (relative to the reference):

    * sd: mean over dims of log(SD / SD_ref)^2 - each dimension's spread, blind to rotations and to the
      shrinking of single directions (a direction is spread over many dims);
    * pairwise: mean squared change of the pairwise distances over the mean squared reference distance -
      blind to rotations and translations only;
    * centred: squared change of each sample's offset from the batch mean over the reference offsets' mean
      square - only a translation of w is free (the strictest).
    """
    if w.shape != w_ref.shape or w.ndim != 2:
        raise ValueError(f"w and w_ref must be the same [N, D] shape, got {list(w.shape)} and {list(w_ref.shape)}")
    w_ref = w_ref.detach()
    if kind == "sd":
        return (w.std(dim=0) / w_ref.std(dim=0).clamp_min(1e-8)).clamp_min(1e-8).log().square().mean()
    if kind == "pairwise":
        dist, dist_ref = torch.pdist(w), torch.pdist(w_ref)
        return (dist - dist_ref).square().mean() / dist_ref.square().mean().clamp_min(1e-12)
    if kind == "centred":
        offset, offset_ref = w - w.mean(dim=0), w_ref - w_ref.mean(dim=0)
        return (offset - offset_ref).square().sum(dim=1).mean() / offset_ref.square().sum(dim=1).mean().clamp_min(1e-12)
    raise ValueError(f"w spread kind must be one of {', '.join(W_SPREAD_KINDS)}, got '{kind}'")


# --- EMA, RNG ----------------------------------------------------------------------------------
def ema_beta(batch_size: int, half_life_images: float) -> float:
    """Per-step EMA decay such that an image seen `half_life_images` ago weighs half."""
    return 0.5 ** (batch_size / max(half_life_images, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (w_avg, lod, noise) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def rng_state(rng: torch.Generator) -> dict:
    return {"rng": rng.get_state(), "torch_rng": torch.get_rng_state()}


def restore_rng_state(rng: torch.Generator, state: dict) -> None:
    rng.set_state(state["rng"])
    torch.set_rng_state(state["torch_rng"])


# --- the loop ----------------------------------------------------------------------------------
class Trainer(Protocol):
    step_index: int

    def step(self) -> dict[str, float]: ...

    def log_prefix(self) -> dict: ...

    def save(self, path: Path) -> None: ...


def window_means(window: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the steps that reported it (rounded to 5 decimals)."""
    keys = sorted({k for w in window for k in w})
    return {k: round(float(np.mean([w[k] for w in window if k in w])), 5) for k in keys}


def append_log(path: Path, rows: list[dict]) -> None:
    """Append rows to a CSV log atomically (columns may grow: a later row can bring new keys)."""
    if not rows:
        return
    frame = pd.DataFrame(rows)
    if path.is_file():
        frame = pd.concat([pd.read_csv(path), frame], ignore_index=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def trim_log(path: Path, last_step: int) -> None:
    """Drop log rows after `last_step` (-1: all): rows a killed run wrote past the state it resumes from, which the
    resumed run writes again."""
    if not path.is_file():
        return
    frame = pd.read_csv(path)
    kept = frame[frame["step"] <= last_step] if "step" in frame.columns else frame.iloc[:0]
    if len(kept) == len(frame):
        return
    if kept.empty:
        path.unlink()
        return
    with atomic_path(path) as tmp:
        kept.to_csv(tmp, index=False)


def run_loop(trainer: Trainer, end_step: int, run_dir: Path, log_every: int, checkpoint_every: int,
             sample_every: int | None = None, on_log: Callable[[int, dict], None] | None = None,
             on_sample: Callable[[int, list[dict]], None] | None = None,
             should_stop: Callable[[], bool] | None = None, progress: bool = True,
             postfix: dict[str, str] | None = None) -> bool:
    """Train until `end_step` (or `should_stop()`); returns True if the step target was reached.

    A log row is made every `log_every` steps and at the last step; `on_log(step, row)` may add
    columns to it. `on_sample(step, pending_rows)` runs every `sample_every` steps and at the last.
    Rows reach the CSV together with each saved state, so after a kill the log and the state agree.
    """
    state_path = run_dir / STATE_FILE
    log_path = run_dir / LOG_FILE
    rows: list[dict] = []
    window: list[dict[str, float]] = []
    bar = tqdm(total=end_step, initial=trainer.step_index, unit="step", disable=not progress, dynamic_ncols=True)
    stopped = False
    try:
        while trainer.step_index < end_step and not stopped:
            window.append(trainer.step())
            bar.update(1)
            step = trainer.step_index
            stopped = bool(should_stop and should_stop())
            last = step == end_step or stopped
            if step % log_every == 0 or last:
                row = {**trainer.log_prefix(), **window_means(window)}
                window = []
                if on_log is not None:
                    on_log(step, row)
                rows.append(row)
                if postfix:
                    bar.set_postfix({short: row.get(key) for short, key in postfix.items()})
            if sample_every and on_sample is not None and (step % sample_every == 0 or last):
                on_sample(step, rows)
            if step % checkpoint_every == 0 or last:
                append_log(log_path, rows)
                rows = []
                trainer.save(state_path)
    finally:
        bar.close()  # also when a step or a save fails: the error line then starts a line of its own
    append_log(log_path, rows)
    return trainer.step_index >= end_step


def plot_log_curves(log_path: Path, png_path: Path, panels: dict[str, list[str]], x: str = "step",
                    relative: tuple[str, ...] = ()) -> Path | None:
    """One panel per entry of `panels` (title -> columns present in the log); PNG written atomically.
    In the panels named in `relative` each column is drawn divided by its first logged value (figures on
    different scales, e.g. the variety figures, share one panel as "fraction of the start")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log_path.is_file():
        return None
    log = pd.read_csv(log_path)
    panels = {title: [c for c in cols if c in log and log[c].notna().any()] for title, cols in panels.items()}
    panels = {title: cols for title, cols in panels.items() if cols}
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (title, cols) in zip(axes[0], panels.items()):
        for col in cols:
            points = log[[x, col]].dropna()  # columns logged every N rows (the monitor) have gaps
            if title in relative and len(points) and points[col].iloc[0] != 0:
                points = points.assign(**{col: points[col] / points[col].iloc[0]})
            ax.plot(points[x], points[col], label=col, linewidth=1.2, marker="o" if len(points) < 30 else None,
                    markersize=3)
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return png_path
