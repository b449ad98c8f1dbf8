"""Scene layouts: what a synthetic image shows, decided before anything is drawn.

A scene is a :class:`Layout`: polygons in back-to-front order. Street scenes (:func:`cityscapes_layout`) are
built to be hard in the way the paper cares about (spec section 2: "poorly separated adjacent instances"): rows
of touching cars and groups of people that occlude each other, riders on top of their bicycles, a perspective
that makes near objects large and far ones tiny, and Cityscapes-like class imbalance (about 9 cars and 6 people
per image, a train in one image of twenty). Rooms and yards (:func:`ade20k_layout`) hold clusters of the 100
ADE20K instance categories, each with a fixed look (:data:`ADE_LOOKS`) and a long-tailed frequency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from castlib.data.classes import ADE20K
from castlib.data.domains import TARGET, DomainStyle


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
class ClassLook:
    """How every instance of one ADE20K category is drawn (fixed per category across all synthetic sets)."""

    shape: str
    aspect: float  # width / height
    colour: tuple[float, float, float]
    texture: int  # 0 flat, 1 stripes, 2 checker, 3 noise, 4 dots
    period: float
    angle: float


def _ade_looks() -> list[ClassLook]:
    rng = np.random.default_rng(_ADE_CLASS_RNG_SEED)
    return [
        ClassLook(
            shape=str(rng.choice(_SHAPES)),
            aspect=float(np.exp(rng.uniform(-0.9, 0.9))),
            colour=tuple(rng.uniform(0.1, 0.95, 3)),
            texture=int(rng.integers(0, 5)),
            period=float(rng.uniform(3, 9)),
            angle=float(rng.uniform(0, np.pi)),
        )
        for _ in ADE20K.names
    ]


ADE_LOOKS = _ade_looks()
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
        look = ADE_LOOKS[c]
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
