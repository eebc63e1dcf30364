"""A deterministic synthetic chest X-ray set in the NIH ChestX-ray14 layout.

Each image has a body silhouette, two lung fields crossed by ribs, a mediastinum and heart shadow,
diaphragm domes, film grain and per-image exposure. Pneumonia cases carry one to three patchy
consolidations inside a lung field; their size and density vary, so a few are subtle. Some normal
images have a denser lung texture, and some rows carry other findings (the loader drops them), so
the task is learnable but not trivial.
"""

from __future__ import annotations

import csv
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pneumo.config import cores

NIH_CSV = "Data_Entry_2017.csv"
NIH_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
]
PARALLEL_FROM = 500  # films: fewer are rendered in this process (starting processes costs ~1 s)
OTHER_FINDINGS = ["Effusion", "Atelectasis", "Nodule", "Cardiomegaly"]


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def _soft(mask_distance: np.ndarray, edge: float = 0.08) -> np.ndarray:
    """1 inside an ellipse (distance < 1), 0 outside, with a soft edge."""
    return np.clip((1.0 - mask_distance) / edge, 0.0, 1.0)


def render_xray(rng: np.random.Generator, anatomy: dict[str, float], pneumonia: bool, size: int):
    """Render one image as an 8-bit grayscale array of shape (size, size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, lung_top, lung_h = anatomy["cx"], anatomy["lung_top"], anatomy["lung_h"]
    cx += rng.normal(0, 0.01)
    img = np.full((size, size), 0.08, np.float32)
    img += 0.32 * _soft(_ellipse(yy, xx, 0.62, cx, 0.55, anatomy["body_w"]), 0.15)

    lungs = np.zeros_like(img)
    for side in (-1, 1):
        lx = cx + side * anatomy["lung_dx"]
        lungs = np.maximum(
            lungs, _soft(_ellipse(yy, xx, lung_top + lung_h / 2, lx, lung_h / 2, anatomy["lung_w"]))
        )
    texture = np.asarray(
        Image.fromarray((rng.random((size // 8, size // 8)) * 255).astype(np.uint8)).resize(
            (size, size), Image.BICUBIC
        ),
        np.float32,
    )
    density = anatomy["texture"] + (0.05 if rng.random() < 0.15 else 0.0)
    img -= lungs * (0.26 - density * (texture / 255.0 - 0.5))

    ribs = np.zeros_like(img)
    for i in range(9):
        y0 = lung_top + 0.02 + i * lung_h / 9.5
        arc = y0 + anatomy["rib_curve"] * (xx - cx) ** 2 - 0.04 * np.abs(xx - cx)
        ribs += np.exp(-(((yy - arc) / 0.011) ** 2))
    img += 0.09 * ribs * lungs

    img += 0.30 * _soft(_ellipse(yy, xx, 0.55, cx, 0.42, 0.065), 0.3)  # mediastinum
    heart_x = cx + anatomy["heart_dx"]
    img += 0.22 * _soft(_ellipse(yy, xx, lung_top + lung_h * 0.78, heart_x, 0.13, 0.12), 0.3)
    dome_y = lung_top + lung_h * 0.97
    img += 0.25 * (yy > dome_y + 0.05 * ((xx - cx) / 0.3) ** 2) * (np.abs(xx - cx) < 0.42)

    if pneumonia:
        for _ in range(rng.integers(1, 4)):
            side = rng.choice([-1, 1])
            py = lung_top + lung_h * rng.uniform(0.3, 0.85)
            px = cx + side * anatomy["lung_dx"] + rng.normal(0, anatomy["lung_w"] * 0.3)
            r = rng.uniform(0.05, 0.12)
            blob = np.exp(-_ellipse(yy, xx, py, px, r, r * rng.uniform(0.7, 1.4)) * 2.0)
            patchy = 0.6 + 0.8 * (texture / 255.0)
            img += rng.uniform(0.12, 0.28) * blob * patchy * lungs

    img = img * anatomy["exposure"] + rng.normal(0, 0.025, img.shape)
    img = np.clip(img, 0, 1)
    out = Image.fromarray((img * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    angle = rng.normal(0, 2.0)
    return np.asarray(out.rotate(angle, resample=Image.BILINEAR, fillcolor=20))


def _anatomy(rng: np.random.Generator) -> dict[str, float]:
    return {
        "cx": rng.normal(0.5, 0.015),
        "lung_top": rng.uniform(0.16, 0.24),
        "lung_h": rng.uniform(0.52, 0.62),
        "lung_w": rng.uniform(0.12, 0.16),
        "lung_dx": rng.uniform(0.17, 0.21),
        "body_w": rng.uniform(0.40, 0.48),
        "rib_curve": rng.uniform(0.3, 0.7),
        "heart_dx": rng.uniform(0.03, 0.07),
        "texture": rng.uniform(0.08, 0.16),
        "exposure": rng.uniform(0.85, 1.15),
    }


LAYOUTS = ("nih", "folders")


def _render_to(job: tuple[Path, int, int, int, dict[str, float], bool, int]) -> None:
    """Render one film (its own generator: the same bytes in any process, in any order) and save it."""
    path, seed, patient, follow_up, anatomy, sick, size = job
    pixels = render_xray(np.random.default_rng([seed, patient, follow_up]), anatomy, sick, size)
    Image.fromarray(pixels, mode="L").save(path, optimize=False)


def _render_all(jobs: list[tuple[Path, int, int, int, dict[str, float], bool, int]]) -> None:
    """Render on every core (spawned processes: safe beside threads and TensorFlow) when there are
    enough films to pay for starting them; progress every 10,000 films."""
    if len(jobs) < PARALLEL_FROM or cores() == 1:
        for job in jobs:
            _render_to(job)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=cores(), mp_context=context) as pool:
        for done, _ in enumerate(pool.map(_render_to, jobs, chunksize=64), 1):
            if done % 10_000 == 0:
                print(f"synth: {done}/{len(jobs)} images")


def generate(out: Path, n: int = 300, seed: int = 0, size: int = 256, prevalence: float = 0.35,
             layout: str = "nih"):  # fmt: skip
    """Write ``n`` images below ``out``, labelled by ``Data_Entry_2017.csv`` or by class folders.

    Args:
        out: target folder (created).
        n: number of images.
        seed: the same seed gives byte-identical output.
        size: image side in pixels.
        prevalence: share of patients with pneumonia.
        layout: ``nih``: ``out/images/`` and the CSV; ``folders``: ``out/NORMAL/`` and
            ``out/PNEUMONIA/`` with Kermany-style names (``person12_000.png``, patient ``person12``)
            and no other findings.

    Returns:
        The rows written to the CSV.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    rng = np.random.default_rng(seed)
    for folder in ("images",) if layout == "nih" else ("NORMAL", "PNEUMONIA"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    jobs = []
    patient = 0
    while len(rows) < n:
        patient += 1
        anatomy = _anatomy(rng)
        age, gender = int(rng.integers(18, 90)), str(rng.choice(["M", "F"]))
        sick = bool(rng.random() < prevalence)
        for follow_up in range(min(int(rng.integers(1, 4)), n - len(rows))):
            other = rng.random() < 0.08 and layout == "nih"
            labels = [str(rng.choice(OTHER_FINDINGS))] if other else []
            if sick:
                labels.append("Pneumonia")
            if layout == "nih":
                name, folder = f"{patient:08d}_{follow_up:03d}.png", "images"
            else:
                name, folder = f"person{patient}_{follow_up:03d}.png", "PNEUMONIA" if sick else "NORMAL"
            jobs.append((out / folder / name, seed, patient, follow_up, anatomy, sick, size))
            rows.append(
                {
                    "Image Index": name,
                    "Finding Labels": "|".join(sorted(labels)) or "No Finding",
                    "Follow-up #": follow_up,
                    "Patient ID": patient,
                    "Patient Age": age,
                    "Patient Gender": gender,
                    "View Position": str(rng.choice(["PA", "AP"], p=[0.7, 0.3])),
                }
            )
    _render_all(jobs)
    if layout == "nih":
        with (out / NIH_CSV).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=NIH_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return rows
