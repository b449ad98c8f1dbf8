"""Synthetic instance-segmentation scenes written in the real Cityscapes and ADE20K on-disk formats.

No dataset can be downloaded here, so every code path runs on scenes this module draws. They are
built to be hard in the way the paper cares about (spec section 2: "poorly separated adjacent
instances"): many instances per image, rows of touching cars and groups of people that occlude
each other, riders on top of their bicycles, textured objects on textured backgrounds, a
perspective that makes near objects large and far ones tiny, and Cityscapes-like class imbalance
(about 9 cars and 6 people per image, a train in one image of twenty).

A scene is a :class:`Layout`: polygons in back-to-front order. The Cityscapes writer stores it as
``_gtFine_polygons.json`` and rasterises it with cityscapesscripts' own ``createInstanceImage`` /
``createLabelImage`` (the tools that made the real ``_instanceIds.png`` and ``_labelIds.png``);
the ADE20K writer stores ``annotations_instance`` PNGs with R = category id, G = instance id.
The image is rendered from the same rasterisation, so what the loader reads is what was drawn.

Everything is deterministic: image ``k`` of a split depends only on ``(seed, split, k)``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image, ImageDraw

from castlib.data.classes import ADE20K, CITYSCAPES
from castlib.data.datasets import encode_ade20k
from castlib.data.domains import TARGET, DomainStyle, domain_style
from castlib.errors import DataError
from castlib.io import DiskFullError, human_size, save_image_atomic, write_json_atomic, write_text_atomic

MANIFEST = "synthetic.json"
MARKER = ".castlib-synthetic"  # written first: a folder with it is one castlib is (re)writing
MIN_SIDE = 32  # pixels; smaller images leave no room for the layouts'
SPLIT_CODES = {"train": 0, "val": 1}


@dataclass
class Region:
    """One polygon of a scene: a stuff region or a thing instance (``instance=True``)."""

    name: str
    polygon: np.ndarray  # [P, 2] integer (x, y) vertices
    instance: bool


@dataclass
class Layout:
    """A scene in drawing order (back to front); later regions occlude earlier ones."""

    height: int
    width: int
    regions: list[Region] = field(default_factory=list)

    def index_map(self) -> np.ndarray:
        """Per pixel, 1 + the index of the region visible there (0 = nothing drawn).

        Drawn with PIL's polygon fill, the rasteriser cityscapesscripts uses too.
        """
        canvas = Image.new("I", (self.width, self.height), 0)
        draw = ImageDraw.Draw(canvas)
        for i, region in enumerate(self.regions):
            draw.polygon([tuple(map(int, p)) for p in region.polygon], fill=i + 1)
        return np.asarray(canvas, dtype=np.int64)


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic set is made of; stored in its manifest."""

    format: str  # "cityscapes" | "ade20k"
    train: int
    val: int
    height: int  # Cityscapes: image height; ADE20K: short side
    width: int  # Cityscapes: image width; ADE20K: unused (aspect ratios vary)
    seed: int
    domain: str = "target"  # castlib.data.domains: target (the kit's sets) | source (the pretrain stage's)


# ---------------------------------------------------------------------------------------------
# Shapes: outlines in a unit box (x right, y down), scaled per instance.

_OUTLINES = {
    "car": [(0, .55), (.05, .4), (.22, .35), (.32, .05), (.7, .05), (.82, .35), (.97, .42), (1, .6),
            (1, .85), (.9, .85), (.88, 1), (.72, 1), (.7, .85), (.3, .85), (.28, 1), (.12, 1), (.1, .85),
            (0, .85)],
    "truck": [(0, 0), (.68, 0), (.68, .3), (.85, .3), (1, .55), (1, .88), (.92, .88), (.9, 1), (.75, 1),
              (.73, .88), (.27, .88), (.25, 1), (.1, 1), (.08, .88), (0, .88)],
    "bus": [(0, .05), (.03, 0), (.97, 0), (1, .05), (1, .88), (.88, .88), (.86, 1), (.72, 1), (.7, .88),
            (.3, .88), (.28, 1), (.14, 1), (.12, .88), (0, .88)],
    "train": [(0, .2), (.04, 0), (1, 0), (1, .92), (.8, .92), (.8, 1), (.2, 1), (.2, .92), (0, .92)],
    "person": [(.42, 0), (.58, 0), (.63, .06), (.6, .13), (.78, .18), (.85, .5), (.76, .52), (.72, .32),
               (.7, .55), (.68, 1), (.54, 1), (.5, .62), (.46, 1), (.32, 1), (.3, .55), (.28, .32),
               (.24, .52), (.15, .5), (.22, .18), (.4, .13), (.37, .06)],
    "rider": [(.4, 0), (.58, 0), (.62, .08), (.58, .16), (.8, .22), (.9, .5), (.8, .52), (.72, .35),
              (.7, .62), (.95, .7), (.9, 1), (.76, 1), (.74, .8), (.35, .78), (.25, .6), (.2, .3),
              (.38, .16), (.36, .08)],
    "bicycle": [(0, .62), (.05, .42), (.2, .35), (.3, .4), (.45, .1), (.62, .1), (.7, .38), (.8, .35),
                (.95, .42), (1, .62), (.95, .85), (.8, 1), (.65, .88), (.5, .6), (.35, .88), (.2, 1),
                (.05, .85)],
    "motorcycle": [(0, .6), (.06, .38), (.25, .3), (.35, .1), (.55, .05), (.7, .3), (.85, .3), (.97, .42),
                   (1, .62), (.95, .86), (.8, 1), (.66, .9), (.35, .9), (.2, 1), (.05, .86)],
}  # fmt: skip

# Real-world height (m) and width/height ratio of each Cityscapes thing class.
_THING_SIZE = {
    "person": (1.7, 0.42), "rider": (1.25, 0.55), "car": (1.5, 2.2), "truck": (3.0, 2.1),
    "bus": (3.2, 3.0), "train": (3.8, 6.0), "motorcycle": (1.1, 1.8), "bicycle": (1.0, 1.7),
}  # fmt: skip

# Mean instances per image in Cityscapes train (about 27k cars, 18k people ... over 2975 images).
_CITYSCAPES_RATES = {"car": 9.0, "person": 6.0, "bicycle": 1.2, "rider": 0.6, "motorcycle": 0.25,
                     "truck": 0.16, "bus": 0.13, "train": 0.05}  # fmt: skip


def _outline(name: str, x0: float, y0: float, w: float, h: float, flip: bool, rng: np.random.Generator):
    pts = np.array(_OUTLINES[name], dtype=np.float64)
    pts = pts + rng.normal(0.0, 0.012, pts.shape)  # no two instances have the same silhouette
    if flip:
        pts[:, 0] = 1.0 - pts[:, 0]
    return np.stack([x0 + pts[:, 0] * w, y0 + pts[:, 1] * h], axis=1)


def _clip_round(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    poly = np.round(poly).astype(np.int64)
    poly[:, 0] = poly[:, 0].clip(-1, width)
    poly[:, 1] = poly[:, 1].clip(-1, height)
    return poly


def _rect(x0, y0, x1, y1) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Street scenes (Cityscapes).


def cityscapes_layout(rng: np.random.Generator, height: int, width: int, style: DomainStyle = TARGET) -> Layout:
    """A street scene: sky, buildings, trees, road and sidewalks, then things back to front, seen by the camera
    of ``style`` (its height and horizon; objects scaled by its ``object_scale``, counts by its ``density``)."""
    H, W = height, width
    horizon = H * rng.uniform(*style.horizon)
    vx = W * rng.uniform(0.35, 0.65)  # vanishing point of the road
    stuff: list[Region] = [Region("sky", _rect(0, 0, W, horizon + 2), False)]
    x = -rng.uniform(0, 0.1) * W
    while x < W:  # a skyline of buildings
        bw = W * rng.uniform(0.08, 0.22)
        top = horizon - H * rng.uniform(0.1, 0.38)
        stuff.append(Region("building", _rect(x, top, x + bw, horizon + 3), False))
        x += bw * rng.uniform(0.85, 1.0)
    for _ in range(rng.poisson(2)):  # trees in front of the buildings
        cx, r = W * rng.uniform(0, 1), H * rng.uniform(0.05, 0.14)
        angles = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        radii = r * rng.uniform(0.75, 1.2, angles.size)
        cy = horizon - r * 0.6
        stuff.append(Region("vegetation", np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1),
                            False))
    road_half = W * rng.uniform(0.55, 0.9)
    stuff.append(Region("sidewalk", np.array([(0, horizon), (W, horizon), (W, H), (0, H)], float), False))
    stuff.append(Region("road", np.array([(vx - 2, horizon), (vx + 2, horizon), (vx + road_half, H),
                                          (vx - road_half, H)], float), False))
    for _ in range(rng.poisson(1.5)):  # poles
        px, pw = W * rng.uniform(0, 1), max(1.0, W * 0.006)
        foot = rng.uniform(horizon + 0.1 * H, H)
        stuff.append(Region("pole", _rect(px, foot - (foot - horizon) * 2.5, px + pw * (1 + foot / H), foot),
                            False))

    things: list[tuple[float, Region]] = []  # (foot y, region); sorted back to front below
    min_h = max(5.0, 0.04 * H)

    def place(name: str, foot: float, cx: float, flip: bool, scale: float = 1.0) -> tuple[float, float, float]:
        metres, aspect = _THING_SIZE[name]
        h = metres / style.camera_height * (foot - horizon) * scale * style.object_scale
        w = h * aspect
        if h >= min_h:
            things.append((foot, Region(name, _outline(name, cx - w / 2, foot - h, w, h, flip, rng), True)))
        return cx, foot - h, w

    def foot_y() -> float:  # depth: uniform in inverse distance, so far objects are common and small
        return horizon + (H - horizon) * rng.uniform(0.12, 1.05)

    counts = {name: rng.poisson(rate * style.density) for name, rate in _CITYSCAPES_RATES.items()}
    cars = counts.pop("car")
    while cars > 0:  # rows of touching, occluding cars
        row = min(cars, 1 + rng.geometric(0.35))
        foot, x, flip = foot_y(), W * rng.uniform(-0.1, 0.9), rng.random() < 0.5
        for _ in range(row):
            _, _, w = place("car", foot + rng.normal(0, 0.01 * H), x, flip)
            x += w * rng.uniform(0.55, 1.05)
        cars -= row
    people = counts.pop("person")
    while people > 0:  # groups of people
        group = min(people, rng.geometric(0.4))
        foot, x = foot_y(), W * rng.uniform(0, 1)
        for _ in range(group):
            _, _, w = place("person", foot + rng.normal(0, 0.015 * H), x, rng.random() < 0.5,
                            scale=rng.uniform(0.85, 1.1))
            x += w * rng.uniform(0.35, 1.0) * rng.choice([-1, 1])
        people -= group
    for _ in range(counts.pop("rider")):  # a rider sits on a bicycle or motorcycle, drawn after it
        vehicle = "bicycle" if rng.random() < 0.75 else "motorcycle"
        foot, cx, flip = foot_y(), W * rng.uniform(0, 1), rng.random() < 0.5
        _, top, _ = place(vehicle, foot, cx, flip)
        metres, aspect = _THING_SIZE["rider"]
        h = metres / style.camera_height * (foot - horizon) * style.object_scale
        if h >= min_h:
            r = _outline("rider", cx - h * aspect / 2, top - 0.55 * h, h * aspect, h, flip, rng)
            things.append((foot + 1e-3, Region("rider", r, True)))
    for name, n in counts.items():
        for _ in range(n):
            place(name, foot_y(), W * rng.uniform(0, 1), rng.random() < 0.5)

    things.sort(key=lambda t: t[0])
    regions = [Region(r.name, _clip_round(r.polygon, H, W), r.instance) for r in stuff + [t[1] for t in things]]
    return Layout(H, W, regions)


# ---------------------------------------------------------------------------------------------
# Indoor and outdoor scenes with the 100 ADE20K instance categories.

_SHAPES = ("rect", "ellipse", "rounded", "triangle", "trapezoid", "hexagon", "star", "blob")
_ADE_CLASS_RNG_SEED = 20210  # fixes each category's look across every synthetic set


@dataclass(frozen=True)
class _ClassLook:
    shape: str
    aspect: float  # width / height
    colour: tuple[float, float, float]
    texture: int  # 0 flat, 1 stripes, 2 checker, 3 noise, 4 dots
    period: float
    angle: float


def _ade_looks() -> list[_ClassLook]:
    rng = np.random.default_rng(_ADE_CLASS_RNG_SEED)
    return [
        _ClassLook(
            shape=str(rng.choice(_SHAPES)),
            aspect=float(np.exp(rng.uniform(-0.9, 0.9))),
            colour=tuple(rng.uniform(0.1, 0.95, 3)),
            texture=int(rng.integers(0, 5)),
            period=float(rng.uniform(3, 9)),
            angle=float(rng.uniform(0, np.pi)),
        )
        for _ in ADE20K.names
    ]


_ADE_LOOKS = _ade_looks()
# Long-tailed category frequencies (Zipf, exponent 1.1) over a fixed permutation of the 100 classes.
_ADE_FREQ = np.random.default_rng(_ADE_CLASS_RNG_SEED + 1).permutation(
    1.0 / np.arange(1, len(ADE20K) + 1) ** 1.1
)
_ADE_FREQ = _ADE_FREQ / _ADE_FREQ.sum()


def _shape_polygon(shape: str, x0: float, y0: float, w: float, h: float, rng: np.random.Generator):
    cx, cy = x0 + w / 2, y0 + h / 2
    if shape == "rect":
        return _rect(x0, y0, x0 + w, y0 + h)
    if shape == "triangle":
        return np.array([(cx, y0), (x0 + w, y0 + h), (x0, y0 + h)], float)
    if shape == "trapezoid":
        return np.array([(x0 + 0.2 * w, y0), (x0 + 0.8 * w, y0), (x0 + w, y0 + h), (x0, y0 + h)], float)
    n = {"ellipse": 20, "rounded": 16, "hexagon": 6, "star": 10, "blob": 12}[shape]
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + (np.pi / 6 if shape == "hexagon" else 0)
    r = np.ones(n)
    if shape == "star":
        r[1::2] = 0.45
    elif shape == "blob":
        r = rng.uniform(0.7, 1.15, n)
    elif shape == "rounded":
        r = 1 / np.maximum(np.abs(np.cos(t)), np.abs(np.sin(t))) ** 0.35
        r = r / r.max()
    return np.stack([cx + r * np.cos(t) * w / 2, cy + r * np.sin(t) * h / 2], axis=1)


def ade20k_layout(rng: np.random.Generator, height: int, width: int, style: DomainStyle = TARGET) -> Layout:
    """A room or yard: wall and floor (unlabelled), then clusters of same-class objects (sizes scaled by the
    ``object_scale`` of ``style``, cluster counts by its ``density``)."""
    H, W = height, width
    floor = H * rng.uniform(0.45, 0.65)
    stuff = [Region("wall", _rect(0, 0, W, floor + 1), False), Region("floor", _rect(0, floor, W, H), False)]
    things: list[tuple[float, Region]] = []
    n_clusters = 2 + rng.poisson(3 * style.density)
    classes = rng.choice(len(ADE20K), size=n_clusters, p=_ADE_FREQ)
    for c in classes:
        look = _ADE_LOOKS[c]
        size = min(H, W) * np.exp(rng.uniform(np.log(0.08), np.log(0.45))) * style.object_scale  # scale variation
        h = size / math.sqrt(look.aspect)
        w = size * math.sqrt(look.aspect)
        foot = rng.uniform(0.3 * H, 1.05 * H)
        x = rng.uniform(-0.1 * W, 0.9 * W)
        for _ in range(min(1 + rng.geometric(0.45), 8)):  # a row of touching instances
            s = rng.uniform(0.85, 1.15)
            poly = _shape_polygon(look.shape, x, foot - h * s, w * s, h * s, rng)
            things.append((foot, Region(ADE20K.names[c], poly, True)))
            x += w * s * rng.uniform(0.6, 1.05)
            foot += rng.normal(0, 0.02 * H)
    things.sort(key=lambda t: t[0])
    regions = [Region(r.name, _clip_round(r.polygon, H, W), r.instance) for r in stuff + [t[1] for t in things]]
    return Layout(H, W, regions)


# ---------------------------------------------------------------------------------------------
# Rendering: textures and shading per visible region, dark contours at region boundaries.

_STUFF_LOOK = {  # base colour, texture, period
    "sky": ((0.55, 0.7, 0.9), 0, 0.0), "building": ((0.55, 0.45, 0.4), 2, 6.0),
    "vegetation": ((0.25, 0.5, 0.2), 3, 0.0), "road": ((0.35, 0.35, 0.37), 3, 0.0),
    "sidewalk": ((0.6, 0.55, 0.55), 2, 9.0), "pole": ((0.3, 0.3, 0.3), 0, 0.0),
    "wall": ((0.78, 0.74, 0.66), 1, 12.0), "floor": ((0.5, 0.38, 0.28), 1, 7.0),
}  # fmt: skip
_CITYSCAPES_THING_COLOUR = {
    "person": (0.6, 0.25, 0.25), "rider": (0.8, 0.35, 0.1), "car": (0.2, 0.3, 0.6), "truck": (0.3, 0.45, 0.4),
    "bus": (0.8, 0.7, 0.2), "train": (0.4, 0.55, 0.7), "motorcycle": (0.5, 0.2, 0.5), "bicycle": (0.6, 0.4, 0.7),
}  # fmt: skip
_VEHICLES = {"car", "truck", "bus", "train"}


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    small = rng.normal(0, 1, (height // cell + 2, width // cell + 2)).astype(np.float32)
    big = np.asarray(Image.fromarray(small).resize(((width // cell + 2) * cell, (height // cell + 2) * cell),
                                                   Image.BICUBIC))
    return big[:height, :width]


def render(layout: Layout, index_map: np.ndarray, rng: np.random.Generator, style: DomainStyle = TARGET) -> np.ndarray:
    """An RGB uint8 image of ``layout`` in the palette, textures, light and camera noise of ``style``;
    ``index_map`` is ``layout.index_map()``."""
    H, W = layout.height, layout.width
    n = len(layout.regions) + 1
    colour = np.zeros((n, 3), np.float32)
    texture = np.zeros(n, np.int64)
    period = np.full(n, 6.0, np.float32)
    angle = np.zeros(n, np.float32)
    boxes = np.zeros((n, 4), np.float32)  # x0, y0, x1, y1
    vehicle = np.zeros(n, bool)
    person = np.zeros(n, bool)
    for i, r in enumerate(layout.regions, start=1):
        boxes[i] = (*r.polygon.min(0), *r.polygon.max(0))
        if r.name in _STUFF_LOOK:
            base, texture[i], p = _STUFF_LOOK[r.name]
            period[i] = max(p, 1.0)
            colour[i] = np.clip(style.colour(base) + rng.normal(0, 0.04, 3), 0, 1)
        elif r.name in _CITYSCAPES_THING_COLOUR:  # a class colour, each instance tinted differently
            colour[i] = np.clip(style.colour(_CITYSCAPES_THING_COLOUR[r.name]) + rng.normal(0, 0.12, 3), 0.03, 0.97)
            texture[i] = rng.choice(style.thing_textures)
            period[i], angle[i] = rng.uniform(2.5, 6), rng.uniform(0, np.pi)
            vehicle[i], person[i] = r.name in _VEHICLES, r.name in ("person", "rider")
        else:
            look = _ADE_LOOKS[ADE20K.names.index(r.name)]
            colour[i] = np.clip(style.colour(look.colour) + rng.normal(0, 0.07, 3), 0.02, 0.98)
            texture[i], period[i], angle[i] = look.texture, look.period, look.angle + rng.normal(0, 0.2)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    idx = index_map
    b = boxes[idx]
    u = (xx - b[..., 0]) / np.maximum(b[..., 2] - b[..., 0], 1)  # position inside the region's box
    v = (yy - b[..., 1]) / np.maximum(b[..., 3] - b[..., 1], 1)
    rot = xx * np.cos(angle[idx]) + yy * np.sin(angle[idx])
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * rot / period[idx])
    checker = ((xx // period[idx] + yy // period[idx]) % 2).astype(np.float32)
    noise = _smooth_noise(rng, H, W, 3)
    dots = (np.sin(2 * np.pi * xx / period[idx]) * np.sin(2 * np.pi * yy / period[idx]) > 0.6).astype(np.float32)
    pattern = np.select([texture[idx] == k for k in range(5)],
                        [np.zeros_like(xx), stripes - 0.5, checker - 0.5, noise * 0.5, dots - 0.3])
    img = colour[idx] * (1 + 0.22 * pattern[..., None])
    img = img * style.shade(u, v)[..., None]  # light from above (target) or from the side (source)
    is_vehicle, is_person = vehicle[idx], person[idx]
    windows = is_vehicle & (v > 0.12) & (v < 0.42) & (u > 0.12) & (u < 0.88)
    img[windows] = img[windows] * 0.4 + np.array([0.45, 0.55, 0.65], np.float32) * 0.6
    wheels = is_vehicle & (v > 0.78)
    img[wheels] *= 0.35
    head = is_person & (v < 0.13)
    img[head] = img[head] * 0.3 + np.array([0.85, 0.65, 0.5], np.float32) * 0.7
    legs = is_person & (v > 0.6)
    img[legs] *= 0.55
    # Contours where two regions meet: the cue that separates touching instances, faint at random.
    edge = np.zeros((H, W), bool)
    edge[1:, :] |= idx[1:, :] != idx[:-1, :]
    edge[:, 1:] |= idx[:, 1:] != idx[:, :-1]
    strength = rng.uniform(*style.contour, n).astype(np.float32)
    img[edge] *= strength[idx[edge]][:, None]
    img += rng.normal(0, style.noise, img.shape).astype(np.float32)  # sensor noise
    img *= rng.uniform(*style.exposure)  # exposure
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Writers.

_CITIES = {"train": ("synthaachen", "synthbremen", "synthjena"), "val": ("synthlindau", "synthmunster")}


def cityscapes_image_id(split: str, index: int) -> str:
    """``{city}_{seq:06d}_{frame:06d}`` like ``aachen_000000_000019``; frame 19 is the annotated one."""
    cities = _CITIES[split]
    return f"{cities[index % len(cities)]}_{index:06d}_000019"


def ade20k_image_id(split: str, index: int) -> str:
    return f"ADE_{'train' if split == 'train' else 'val'}_{index + 1:08d}"


def _image_rng(seed: int, split: str, index: int, style: DomainStyle = TARGET) -> np.random.Generator:
    key = [seed, SPLIT_CODES[split], index] + ([style.code] if style.code else [])  # the target keeps its streams
    return np.random.default_rng(key)


def cityscapes_scene(spec: SyntheticSpec, split: str, index: int) -> tuple[Layout, np.ndarray, np.ndarray]:
    """The layout, its region index map and its rendered image for one Cityscapes-format image."""
    style = domain_style(spec.domain)
    rng = _image_rng(spec.seed, split, index, style)
    layout = cityscapes_layout(rng, spec.height, spec.width, style)
    index_map = layout.index_map()
    return layout, index_map, render(layout, index_map, rng, style)


def ade20k_scene(spec: SyntheticSpec, split: str, index: int) -> tuple[Layout, np.ndarray, np.ndarray]:
    style = domain_style(spec.domain)
    rng = _image_rng(spec.seed, split, index, style)
    aspect = rng.choice([4 / 3, 3 / 4, 1.0, 3 / 2])
    short = spec.height
    h, w = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    layout = ade20k_layout(rng, h, w, style)
    index_map = layout.index_map()
    return layout, index_map, render(layout, index_map, rng, style)


def cityscapes_annotation(layout: Layout) -> dict:
    """The ``_gtFine_polygons.json`` content of a layout."""
    return {
        "imgHeight": layout.height,
        "imgWidth": layout.width,
        "objects": [{"label": r.name, "polygon": r.polygon.tolist()} for r in layout.regions],
    }


def write_cityscapes_image(root: Path, split: str, index: int, spec: SyntheticSpec) -> str:
    layout, _, image = cityscapes_scene(spec, split, index)
    image_id = cityscapes_image_id(split, index)
    city = image_id.split("_")[0]
    gt = root / "gtFine" / split / city
    polygons = cityscapes_annotation(layout)
    write_text_atomic(gt / f"{image_id}_gtFine_polygons.json", json.dumps(polygons, indent=1) + "\n")
    annotation = Annotation()
    annotation.fromJsonText(json.dumps(polygons))
    instance_ids = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.int64)
    save_image_atomic(gt / f"{image_id}_gtFine_instanceIds.png", Image.fromarray(instance_ids.astype(np.uint16)))
    save_image_atomic(gt / f"{image_id}_gtFine_labelIds.png", createLabelImage(annotation, "ids"))
    save_image_atomic(gt / f"{image_id}_gtFine_color.png", createLabelImage(annotation, "color"))
    save_image_atomic(root / "leftImg8bit" / split / city / f"{image_id}_leftImg8bit.png", Image.fromarray(image))
    return image_id


def visible_instances(layout: Layout, index_map: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``[N, H, W]`` and contiguous labels of the instances left visible after occlusion."""
    masks, labels = [], []
    for i, region in enumerate(layout.regions, start=1):
        visible = index_map == i
        if region.instance and visible.any():
            masks.append(visible)
            labels.append(classes.names.index(region.name))
    if not masks:
        return np.zeros((0, *index_map.shape), bool), np.zeros(0, np.int64)
    return np.stack(masks), np.asarray(labels, np.int64)


def write_ade20k_image(root: Path, split: str, index: int, spec: SyntheticSpec) -> str:
    layout, index_map, image = ade20k_scene(spec, split, index)
    image_id = ade20k_image_id(split, index)
    folder = "training" if split == "train" else "validation"
    save_image_atomic(root / "images" / folder / f"{image_id}.jpg", Image.fromarray(image), quality=95)
    masks, labels = visible_instances(layout, index_map, ADE20K)
    save_image_atomic(root / "annotations_instance" / folder / f"{image_id}.png", encode_ade20k(masks, labels, ADE20K))
    return image_id


def ade20k_category_file() -> dict:
    """The category list in the layout of Mask2Former's ``ade20k_instance_imgCatIds.json``."""
    return {"categories": [{"id": i, "name": n} for i, n in zip(ADE20K.dataset_ids, ADE20K.names, strict=True)]}


_WRITERS = {"cityscapes": write_cityscapes_image, "ade20k": write_ade20k_image}


def read_manifest(root: Path) -> SyntheticSpec | None:
    return _read_manifest(root)[0]


def _read_manifest(root: Path) -> tuple[SyntheticSpec | None, dict | None]:
    """The spec and domain style a set's manifest records (``None, None`` without one). Manifests from before
    styles were recorded drew the target style, which is unchanged."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None, None
    try:
        manifest = json.loads(path.read_text())
        spec = SyntheticSpec(**manifest["spec"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(path, f"not a valid synthetic-set manifest ({e})") from e
    style = manifest.get("style")
    if style is None and spec.domain == TARGET.name:
        style = _style_record(TARGET)
    return spec, style


def check_spec(spec: SyntheticSpec) -> None:
    """Range-check a spec before anything is written (``synth --train -3`` is an error, not a set)."""
    if spec.format not in _WRITERS:
        raise DataError(Path("--format"), f"unknown synthetic format {spec.format!r}; use one of {sorted(_WRITERS)}")
    for name in ("train", "val"):
        if getattr(spec, name) < 1:
            raise DataError(Path(f"--{name}"), f"needs at least 1 image, got {getattr(spec, name)}")
    sides = ("height", "width") if spec.format == "cityscapes" else ("height",)
    for name in sides:
        if getattr(spec, name) < MIN_SIDE:
            raise DataError(Path(f"--{name}"), f"must be at least {MIN_SIDE} pixels, got {getattr(spec, name)}")
    if spec.seed < 0:
        raise DataError(Path("--seed"), f"must be >= 0, got {spec.seed}")


def generate(spec: SyntheticSpec, root: str | Path, progress: bool = False) -> Path:
    """Write a synthetic set to ``root``; the manifest, written last, marks it complete.

    An existing complete set with the same spec is kept as it is; one with a different spec is an
    error (nothing already written is overwritten). An incomplete set castlib started (its marker file
    is there) is regenerated; any other non-empty folder is refused, so a real dataset root is never touched.
    """
    check_spec(spec)
    root = Path(root)
    (existing, stored_style), style = _read_manifest(root), _style_record(domain_style(spec.domain))
    if existing == spec:
        if stored_style == style:
            return root
        raise DataError(root / MANIFEST, f"drawn in another style of the {spec.domain!r} domain than this castlib "
                                         f"draws (castlib.data.domains changed since); remove the folder to redraw it")
    if existing is not None:
        raise DataError(root / MANIFEST, f"a synthetic set with another spec is already here ({existing}); "
                                         f"remove the folder or choose another output to write {spec}")
    if root.exists() and not root.is_dir():
        raise DataError(root, "exists and is not a folder; choose another output")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise DataError(root, "folder is not empty and is not a synthetic set castlib made; nothing was "
                                  "written (choose a new or empty folder)")
        for child in ("leftImg8bit", "gtFine", "images", "annotations_instance"):
            shutil.rmtree(root / child, ignore_errors=True)
    created = not root.exists()
    writer = _WRITERS[spec.format]
    jobs = [(split, i) for split in ("train", "val") for i in range(getattr(spec, split))]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc=f"synthetic {spec.format}", unit="img")
    done = 0
    try:
        write_text_atomic(root / MARKER, "a synthetic set castlib is writing or wrote; see synthetic.json\n")
        for split, i in jobs:
            writer(root, split, i, spec)
            done += 1
        if spec.format == "ade20k":
            write_json_atomic(root / "ade20k_instance_imgCatIds.json", ade20k_category_file())
        manifest = {"spec": asdict(spec), "style": style, "note": "synthetic data drawn by castlib"}
        write_json_atomic(root / MANIFEST, manifest)
    except DiskFullError as e:  # the set is redrawn whole on the next call: free its space now
        total = spec.train + spec.val
        per_image = (_folder_bytes(root) / done if done else
                     (e.needed or 0) * _FILES_PER_IMAGE[spec.format])  # measured, else the failed file's kind
        _remove_partial(root, created)
        raise DiskFullError(root, f"the synthetic set ({total} images, {human_size(per_image)} each)",
                            int(per_image * total), left="what was drawn of the set is removed (the next call draws "
                                                         "it whole)") from e
    return root


_FILES_PER_IMAGE = {"cityscapes": 5, "ade20k": 2}  # files write_cityscapes_image / write_ade20k_image write


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _remove_partial(root: Path, created: bool) -> None:
    """Remove what :func:`generate` wrote of an unfinished set (the folders it draws into, its marker; the root
    too when it made it)."""
    for child in ("leftImg8bit", "gtFine", "images", "annotations_instance"):
        shutil.rmtree(root / child, ignore_errors=True)
    for name in (MARKER, "ade20k_instance_imgCatIds.json"):
        (root / name).unlink(missing_ok=True)
    if created and root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def _style_record(style: DomainStyle) -> dict:
    """The domain style as the manifest stores it (JSON types), so a set drawn in an older style is never reused
    and the runs that read the set (their ids hash the manifest) are new ones."""
    return json.loads(json.dumps(asdict(style)))


__all__ = [
    "CITYSCAPES",
    "Layout",
    "Region",
    "SyntheticSpec",
    "ade20k_image_id",
    "ade20k_layout",
    "ade20k_scene",
    "cityscapes_image_id",
    "cityscapes_layout",
    "cityscapes_scene",
    "generate",
    "read_manifest",
    "render",
]
