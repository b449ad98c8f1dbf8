"""Drawing: a scene's image, from its layout (textures and shading per visible region, dark contours where
regions meet), and the instance masks left visible after occlusion.

Everything is deterministic: image ``k`` of a split depends only on ``(seed, split, k)``
(:func:`image_rng`), so the layout and the image drawn from one stream are the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from castlib.data.classes import ADE20K
from castlib.data.domains import TARGET, DomainStyle, domain_style
from castlib.data.synthetic.layouts import ADE_LOOKS, Layout, ade20k_layout, cityscapes_layout

SPLIT_CODES = {"train": 0, "val": 1}


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
            look = ADE_LOOKS[ADE20K.names.index(r.name)]
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
# Scenes: one image's layout and rendering, from one random stream.


def image_rng(seed: int, split: str, index: int, style: DomainStyle = TARGET) -> np.random.Generator:
    """The random stream of image ``index`` of ``split``: its layout, then its rendering, draw from it."""
    key = [seed, SPLIT_CODES[split], index] + ([style.code] if style.code else [])  # the target keeps its streams
    return np.random.default_rng(key)


def cityscapes_scene(spec: SyntheticSpec, split: str, index: int) -> tuple[Layout, np.ndarray, np.ndarray]:
    """The layout, its region index map and its rendered image for one Cityscapes-format image."""
    style = domain_style(spec.domain)
    rng = image_rng(spec.seed, split, index, style)
    layout = cityscapes_layout(rng, spec.height, spec.width, style)
    index_map = layout.index_map()
    return layout, index_map, render(layout, index_map, rng, style)


def ade20k_scene(spec: SyntheticSpec, split: str, index: int) -> tuple[Layout, np.ndarray, np.ndarray]:
    """The layout, its region index map and its rendered image for one ADE20K-format image (aspect drawn first)."""
    style = domain_style(spec.domain)
    rng = image_rng(spec.seed, split, index, style)
    aspect = rng.choice([4 / 3, 3 / 4, 1.0, 3 / 2])
    short = spec.height
    h, w = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    layout = ade20k_layout(rng, h, w, style)
    index_map = layout.index_map()
    return layout, index_map, render(layout, index_map, rng, style)


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
