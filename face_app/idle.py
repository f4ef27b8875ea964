"""The original's run-time behaviour as frames of edit weights, for the Edit tab's "play".

Weights here are in this project's orientation (adding a direction INCREASES the property). The original's
vectors pointed towards "less": its dialogue words were negated before use (so their ranges below apply
as they are), while its idle base and blink values were used un-negated (so they are negated here).

Two bugs of the original are fixed: the pose word "normal" is read from the pose word (the original tested
the mouth word), and queued values are consumed first-in first-out (the original popped from the end).
"""

from __future__ import annotations

import io
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

PROPERTIES = ("eyes", "mouth", "pose")

# Uniform ranges per dialogue word (original's values after its negation = this project's orientation).
WORD_RANGES = {
    "eyes": {"small": (-0.2, 0.1), "normal": (0.3, 0.6), "big": (0.8, 1.1), "very big": (1.1, 1.2)},
    "mouth": {"normal": (0.4, 0.8), "big": (1.0, 1.4), "very big": (1.4, 1.6)},
    "pose": {"none": (-0.6, 0.3), "normal": (0.8, 1.5), "a lot": (1.5, 1.8)},
}
IDLE_BASE = {"eyes": -0.2, "mouth": -1.0, "pose": 0.0}
WALK_STEP = {"eyes": 0.035, "mouth": 0.025, "pose": 0.045}
WALK_LIMIT = {"eyes": 0.25, "mouth": 0.15, "pose": 0.4}
BLINKS = (((0.4, 0.6, 0.8, 0.8, 0.6, 0.4), 0.4), ((0.4, 0.6, 0.8, 0.6, 0.4), 0.3), ((0.4, 0.7, 0.7, 0.4), 0.3))
BLINK_PROBABILITY = 0.025
SECONDS_AFTER_ANSWER = 5.0
SECONDS_BETWEEN_BLINKS = 1.0
RISE_FRAMES, HOLD_FRAMES = 30, 10


def weights_from_words(words: dict[str, str | None], rng: np.random.Generator) -> dict[str, float]:
    """One weight per property whose word is given (None = no word: the property is left out)."""
    weights = {}
    for prop in PROPERTIES:
        word = words.get(prop)
        if word is None:
            continue
        if word not in WORD_RANGES[prop]:
            raise ValueError(f"unknown {prop} word {word!r}; expected one of {', '.join(WORD_RANGES[prop])}")
        low, high = WORD_RANGES[prop][word]
        weights[prop] = float(rng.uniform(low, high))
    return weights


def transition_values(current: float, target: float) -> list[float]:
    """70 values: rise current -> target over 30 frames (cosine ease), hold 10, fall back over 30."""
    rise = [(1 + math.cos(math.pi * (1 + t / RISE_FRAMES))) / 2 for t in range(1, RISE_FRAMES + 1)]
    shape = rise + [1.0] * HOLD_FRAMES + rise[::-1]
    return [current + (target - current) * s for s in shape]


@dataclass
class IdleSettings:
    fps: float = 10.0
    seconds: float = 12.0
    seed: int = 0


def idle_frames(settings: IdleSettings, start: dict[str, float] | None = None,
                answer: dict[str, float] | None = None) -> tuple[list[dict[str, float]], int]:
    """Frame weights of the idle behaviour, and how many blinks happened.

    The play starts as if an answer had just been given at frame 0: `answer` (target weights, e.g. from
    weights_from_words) is eased in and out from `start` through the queue; the random walk moves the other
    properties around the idle base. Time is frame / fps."""
    rng = np.random.default_rng(settings.seed)
    walk = {p: IDLE_BASE[p] if start is None else float(start.get(p, IDLE_BASE[p])) for p in PROPERTIES}
    base = dict(walk)
    queues = {p: deque() for p in PROPERTIES}
    for prop, target in (answer or {}).items():
        queues[prop].extend(transition_values(walk[prop], target))
    frames, last_blink, blinks = [], -math.inf, 0
    for frame in range(int(round(settings.fps * settings.seconds))):
        now = frame / settings.fps
        for prop in PROPERTIES:
            step = rng.uniform(-WALK_STEP[prop], WALK_STEP[prop])
            walk[prop] = float(np.clip(walk[prop] + step, base[prop] - WALK_LIMIT[prop], base[prop] + WALK_LIMIT[prop]))
        blink_roll = rng.uniform()
        if (now >= SECONDS_AFTER_ANSWER and now - last_blink >= SECONDS_BETWEEN_BLINKS and not queues["eyes"]
                and blink_roll < BLINK_PROBABILITY):
            shapes, probabilities = zip(*BLINKS)
            shape = shapes[rng.choice(len(shapes), p=probabilities)]
            strength = 1.1 + rng.uniform(0.0, 0.4)
            queues["eyes"].extend(-v * strength for v in shape)  # negative: closes the eyes
            last_blink, blinks = now, blinks + 1
        frames.append({p: queues[p].popleft() if queues[p] else walk[p] for p in PROPERTIES})
    return frames, blinks


def gif_bytes(images: np.ndarray, fps: float, scale: int = 1) -> bytes:
    """An endlessly looping animated GIF of [N, H, W, 3] uint8 frames, upscaled `scale` times smoothly (bicubic;
    a 64 px face enlarged pixel by pixel reads as blocks)."""
    from PIL import Image

    pictures = [Image.fromarray(im) for im in images]
    if scale != 1:
        pictures = [p.resize((p.width * scale, p.height * scale), Image.Resampling.BICUBIC) for p in pictures]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=int(round(1000 / fps)), loop=0, disposal=1)
    return buffer.getvalue()
