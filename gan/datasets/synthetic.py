"""Procedural street scenes in the Cityscapes colour palette: the embedded dataset.

Each scene is drawn twice from one random layout: a flat label map in the
official Cityscapes colours (road, sidewalk, building, sky, vegetation, car,
person, pole, traffic sign, terrain) and a photo-like rendering whose colours
and textures depend on the labels (per-instance car paint, building facades
with windows, textured road with lane marks, sky gradient, lighting, noise).
The mapping is learnable but not trivial: the same label colour maps to many
appearances. Deterministic from (seed, index); written once into a cache in
the pix2pix layout (photo left, label right) so the same loader reads it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from gan.workers import end_with_parent

# Official Cityscapes colours (RGB), from cityscapesScripts' labels.py.
PALETTE = {
    "road": (128, 64, 128),
    "sidewalk": (244, 35, 232),
    "building": (70, 70, 70),
    "pole": (153, 153, 153),
    "traffic_sign": (220, 220, 0),
    "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152),
    "sky": (70, 130, 180),
    "person": (220, 20, 60),
    "car": (0, 0, 142),
}

SPLIT_SIZES = {"train": 400, "val": 50, "test": 50}


def draw_scene(seed: int, index: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Return (photo, label) uint8 RGB arrays of shape (size, size, 3): a street scene painted back to
    front, each layer writing its class into the label and its look into the photo."""
    scene = _Scene(np.random.default_rng([seed, index]), size)
    for layer in (_sky, _buildings, _trees, _ground, _poles_and_signs, _cars_and_people):
        layer(scene)
    return scene.photograph(), scene.label


class _Scene:
    """The canvas: label and photo, normalised pixel coordinates, and the scene's global draws."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.s = rng, size
        self.label = np.zeros((size, size, 3), np.uint8)
        self.photo = np.zeros((size, size, 3), np.float32)
        self.yy, self.xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        self.horizon = rng.uniform(0.35, 0.55)
        self.vanish_x = rng.uniform(0.35, 0.65)
        self.light = rng.uniform(0.75, 1.15)

    def paint(self, mask: np.ndarray, cls: str, look: np.ndarray) -> None:
        self.label[mask] = PALETTE[cls]
        self.photo[mask] = look[mask] if look.ndim == 3 else look

    def photograph(self) -> np.ndarray:
        """Camera: light level, a little blur and sensor noise."""
        photo = self.photo * self.light + self.rng.normal(0, 4, self.photo.shape).astype(np.float32)
        photo = cv2.GaussianBlur(photo, (3, 3), 0.6)
        return np.clip(photo, 0, 255).astype(np.uint8)


def _sky(c: _Scene) -> None:
    """A vertical gradient, hazier towards the horizon, sometimes overcast."""
    overcast = c.rng.random() < 0.4
    top = np.array([150, 170, 190] if overcast else [60, 110, 200], np.float32)
    low = np.array([200, 205, 210] if overcast else [170, 200, 235], np.float32)
    t = np.clip(c.yy / max(c.horizon, 1e-3), 0, 1)[..., None]
    c.paint(np.ones((c.s, c.s), bool), "sky", top * (1 - t) + low * t)


def _buildings(c: _Scene) -> None:
    """Rectangles of random heights with windows, side by side across the image."""
    rng, xx, yy, s = c.rng, c.xx, c.yy, c.s
    x = 0.0
    while x < 1.0:
        w = rng.uniform(0.08, 0.25)
        h = rng.uniform(0.15, c.horizon + 0.05)
        base = c.horizon + rng.uniform(0.02, 0.12)
        facade = rng.uniform(60, 200) * np.array(rng.choice([[1, .95, .9], [1, 1, 1], [1, .85, .75]]), np.float32)
        m = (xx >= x) & (xx < x + w) & (yy >= base - h) & (yy < base)
        look = np.broadcast_to(facade, (s, s, 3)).copy()
        win = ((np.floor(xx * s / 6) % 2 == 0) & (np.floor(yy * s / 8) % 2 == 0))
        look[win] *= 0.45
        c.paint(m, "building", look)
        x += w


def _trees(c: _Scene) -> None:
    """Ellipses of noisy green foliage near the horizon."""
    rng = c.rng
    for _ in range(rng.integers(1, 5)):
        cx, cy = rng.uniform(0, 1), c.horizon + rng.uniform(-0.1, 0.05)
        rx, ry = rng.uniform(0.04, 0.12), rng.uniform(0.05, 0.15)
        m = ((c.xx - cx) / rx) ** 2 + ((c.yy - cy) / ry) ** 2 < 1
        green = np.array([50, 95, 35], np.float32) * rng.uniform(0.7, 1.3)
        c.paint(m, "vegetation", green * (0.7 + 0.6 * rng.random((c.s, c.s, 1), np.float32)))


def _ground(c: _Scene) -> None:
    """The road as a perspective trapezoid with a dashed lane, sidewalks beside it, terrain at the edges."""
    rng, xx, yy, s, horizon = c.rng, c.xx, c.yy, c.s, c.horizon
    ground = yy >= horizon
    depth = np.clip((yy - horizon) / (1 - horizon + 1e-6), 0, 1)
    road_half = 0.04 + depth * rng.uniform(0.45, 0.7)
    side_half = road_half + 0.03 + depth * rng.uniform(0.12, 0.3)
    dx = np.abs(xx - c.vanish_x)
    terrain = ground & (dx >= side_half)
    c.paint(terrain, "terrain", np.array([120, 150, 80], np.float32) * (0.8 + 0.4 * rng.random((s, s, 1), np.float32)))
    sidewalk = ground & (dx < side_half) & (dx >= road_half)
    slab = (np.floor(yy * s / 5 + depth * 8) % 3 == 0)[..., None]
    c.paint(sidewalk, "sidewalk", np.array([170, 165, 160], np.float32) * (0.9 - 0.15 * slab))
    road = ground & (dx < road_half)
    asphalt = rng.uniform(70, 100) + 12 * rng.standard_normal((s, s, 1)).astype(np.float32)
    road_look = np.repeat(asphalt, 3, axis=2)
    lane = (dx < 0.004 + depth * 0.01) & (np.floor(depth * 12) % 2 == 0)
    road_look[lane] = 235
    c.paint(road, "road", road_look)


def _poles_and_signs(c: _Scene) -> None:
    rng, xx, yy = c.rng, c.xx, c.yy
    for _ in range(rng.integers(0, 3)):
        side = rng.choice([-1, 1])
        d = rng.uniform(0.2, 0.9)
        px = c.vanish_x + side * (0.04 + d * 0.62)
        py = c.horizon + d * (1 - c.horizon)
        height, width = 0.1 + 0.45 * d, 0.004 + 0.012 * d
        m = (np.abs(xx - px) < width) & (yy < py) & (yy > py - height)
        c.paint(m, "pole", np.array([110, 110, 115], np.float32))
        if rng.random() < 0.6:
            m = (np.abs(xx - px) < 3 * width) & (yy > py - height) & (yy < py - height + 4 * width)
            c.paint(m, "traffic_sign", np.array([230, 200, 40], np.float32))


def _cars_and_people(c: _Scene) -> None:
    """Cars on the road and people on the sidewalks, far first, so near ones occlude."""
    rng = c.rng
    objects = [("car", rng.uniform(0.05, 0.95)) for _ in range(rng.integers(0, 4))]
    objects += [("person", rng.uniform(0.1, 0.95)) for _ in range(rng.integers(0, 4))]
    for cls, d in sorted(objects, key=lambda o: o[1]):
        (_car if cls == "car" else _person)(c, d, c.horizon + d * (1 - c.horizon))


def _car(c: _Scene, d: float, py: float) -> None:
    rng, xx, yy, s = c.rng, c.xx, c.yy, c.s
    w, h = 0.05 + 0.3 * d, 0.03 + 0.17 * d
    px = c.vanish_x + rng.uniform(-1, 1) * (0.04 + d * 0.5) * 0.6
    m = (np.abs(xx - px) < w / 2) & (yy < py) & (yy > py - h)
    colour = np.array(rng.choice([[200, 30, 30], [30, 30, 35], [220, 220, 225], [40, 70, 160], [140, 140, 150]]),
                      np.float32)
    look = np.broadcast_to(colour, (s, s, 3)).copy()
    look[(yy < py - 0.55 * h)] = [40, 55, 70]  # windows
    look[(yy > py - 0.15 * h) & (np.abs(xx - px) > w * 0.3)] = 15  # wheels
    c.paint(m, "car", look)


def _person(c: _Scene, d: float, py: float) -> None:
    rng, xx, yy, s = c.rng, c.xx, c.yy, c.s
    side = rng.choice([-1, 1])
    px = c.vanish_x + side * (0.04 + d * 0.62) * rng.uniform(1.0, 1.25)
    w, h = 0.012 + 0.04 * d, 0.05 + 0.3 * d
    m = (np.abs(xx - px) < w / 2) & (yy < py) & (yy > py - h)
    look = np.broadcast_to(np.array(rng.uniform(20, 160, 3), np.float32), (s, s, 3)).copy()
    look[yy < py - 0.8 * h] = [200, 160, 130]  # face
    c.paint(m, "person", look)


def _write_pair(args: tuple[int, int, int, str]) -> None:
    seed, index, size, path = args
    photo, label = draw_scene(seed, index, size)
    pair = np.concatenate([photo, label], axis=1)  # pix2pix layout: photo left, label right
    cv2.imwrite(path, cv2.cvtColor(pair, cv2.COLOR_RGB2BGR))


# A partial dataset folder untouched this long belongs to a generator that was killed: a live one
# writes an image every few milliseconds.
ABANDONED_AFTER_S = 3600


def _remove_abandoned(root: Path) -> None:
    for partial in root.glob(".synthetic-*"):
        try:
            newest = max([partial.stat().st_mtime] + [p.stat().st_mtime for p in partial.iterdir()])
        except FileNotFoundError:  # another caller renamed or removed it meanwhile
            continue
        if time.time() - newest > ABANDONED_AFTER_S:
            shutil.rmtree(partial, ignore_errors=True)


def default_cache_dir() -> Path:
    return Path(os.environ.get("PIX2PIX_CACHE") or Path.home() / ".cache" / "pix2pix-suite")


def ensure_synthetic(size: int, seed: int = 0, cache_dir: str | os.PathLike = "",
                     split_sizes: dict[str, int] | None = None) -> Path:
    """Generate the synthetic dataset once (atomically) and return its folder.

    The folder name carries every parameter, so a different request never
    reuses a stale cache; concurrent callers race harmlessly (first rename wins).
    """
    split_sizes = split_sizes or SPLIT_SIZES
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    counts = "-".join(f"{split_sizes[k]}" for k in ("train", "val", "test"))
    target = root / f"synthetic-v1-{size}px-seed{seed}-{counts}"
    if (target / ".complete").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    jobs, offset = [], 0
    for split in ("train", "val", "test"):
        (tmp / split).mkdir()
        for i in range(split_sizes[split]):
            jobs.append((seed, offset + i, size, str(tmp / split / f"{offset + i:05d}.png")))
        offset += split_sizes[split]
    workers = min(len(jobs) // 50 + 1, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=end_with_parent, initargs=(os.getpid(),)) as pool:
            list(pool.map(_write_pair, jobs, chunksize=16))
    else:
        for job in jobs:
            _write_pair(job)
    (tmp / ".complete").write_text("ok\n")
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / ".complete").exists():
            raise
    return target
