"""The two looks of the synthetic scenes (DESIGN 2, issue 13): the *target* domain the kit trains and evaluates
on (every synthetic set made before the source domain existed), and a *source* domain that plays the broad
pretraining data of the foundation models (Grounding DINO, SAM2, DINOv2) on which the ``pretrain`` stage trains
the smoke / mini stand-ins.

Both domains draw the same thing classes with the same outlines, so what is learnt on the source transfers;
they differ in what a change of camera, place and season changes: the palette (hue rotated, colours less
saturated), the thing textures, the light (from the side instead of from above, stronger), the camera height (lower:
closer views, objects larger) and the horizon, the object scale, the number of objects, the exposure, the sensor
noise and how visible the contours are. The source scenes are the easier ones, as broad pretraining data is
for a benchmark like Cityscapes (fewer, larger objects per image: 9.5 instances of median 756 pixels at 128x256
against the target's 12.3 of 337). Issue 13 measured the first source style (higher camera, smaller, denser
objects: 19.4 instances per image, up to 37 for 20 queries) as the hard one: the DINOv2-S stand-in reached
maskAP 5 on it after 1000 iterations, 12 on this one. :mod:`castlib.data.synthetic` reads every one of these from a
:class:`DomainStyle`; the target style reproduces the original drawing bit for bit.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DomainStyle:
    """How a domain draws its scenes; see the module docstring."""

    name: str
    code: int  # enters each image's random stream, so the two domains never draw the same scene
    hue_shift: float  # turns of the colour wheel added to every colour (0 = the original palette)
    saturation: float  # factor on every colour's saturation
    thing_textures: tuple[int, ...]  # Cityscapes things' textures: 0 flat, 1 stripes, 2 checker, 3 noise, 4 dots
    light: tuple[float, float, float]  # shade = a - b * (c * u + (1 - c) * v): u, v the position in the region's box
    camera_height: float  # metres (Cityscapes): an object's pixel height = metres / camera height * depth
    horizon: tuple[float, float]  # range of the horizon line as a fraction of the image height
    object_scale: float  # factor on every object's size
    density: float  # factor on the mean number of instances per image (things of Cityscapes, clusters of ADE20K)
    exposure: tuple[float, float]  # range of the global brightness factor
    noise: float  # standard deviation of the sensor noise
    contour: tuple[float, float]  # range of the darkening factor at region boundaries (lower = more visible)

    def colour(self, rgb) -> np.ndarray:
        """``rgb`` (floats in [0, 1]) in this domain's palette."""
        rgb = np.asarray(rgb, dtype=np.float64)
        if self.hue_shift == 0 and self.saturation == 1:
            return rgb
        h, s, v = colorsys.rgb_to_hsv(*np.clip(rgb, 0, 1))
        return np.array(colorsys.hsv_to_rgb((h + self.hue_shift) % 1.0, min(1.0, s * self.saturation), v))

    def shade(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The light's brightness factor at box coordinates ``u`` (left to right) and ``v`` (top to bottom)."""
        a, b, c = self.light
        return a - b * (c * u + (1 - c) * v) if c else a - b * v


TARGET = DomainStyle(
    name="target", code=0, hue_shift=0.0, saturation=1.0, thing_textures=(0, 1, 3), light=(1.08, 0.25, 0.0),
    camera_height=1.4, horizon=(0.38, 0.48), object_scale=1.0, density=1.0, exposure=(0.8, 1.15), noise=0.02,
    contour=(0.55, 0.95),
)
SOURCE = DomainStyle(
    name="source", code=1, hue_shift=0.08, saturation=0.7, thing_textures=(0, 2, 4), light=(1.2, 0.4, 0.7),
    camera_height=1.2, horizon=(0.3, 0.4), object_scale=1.1, density=0.9, exposure=(0.9, 1.3), noise=0.035,
    contour=(0.4, 0.8),
)
DOMAINS = {style.name: style for style in (TARGET, SOURCE)}


def domain_style(name: str) -> DomainStyle:
    """The style of domain ``name`` (``target`` or ``source``)."""
    if name not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {name!r}; use one of {sorted(DOMAINS)}")
    return DOMAINS[name]
