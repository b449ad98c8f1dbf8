"""Synthetic instance-segmentation scenes written in the real Cityscapes and ADE20K on-disk formats.

No dataset can be downloaded here, so every code path runs on scenes this package draws, in three steps:

- :mod:`~castlib.data.synthetic.layouts`: what a scene shows (a :class:`Layout` of polygons, back to front),
  built to be hard in the way the paper cares about (spec section 2: "poorly separated adjacent instances");
- :mod:`~castlib.data.synthetic.drawing`: the image rendered from a layout in a domain's style, and the
  instance masks left visible after occlusion;
- :mod:`~castlib.data.synthetic.writers`: the files of each format, and :func:`generate` for a whole set.

Everything is deterministic: image ``k`` of a split depends only on ``(seed, split, k)``.
"""

from castlib.data.classes import CITYSCAPES
from castlib.data.synthetic.drawing import (
    SPLIT_CODES,
    SyntheticSpec,
    ade20k_scene,
    cityscapes_scene,
    image_rng,
    render,
    visible_instances,
)
from castlib.data.synthetic.layouts import ADE_LOOKS, ClassLook, Layout, Region, ade20k_layout, cityscapes_layout
from castlib.data.synthetic.writers import (
    MANIFEST,
    MARKER,
    MIN_SIDE,
    ade20k_category_file,
    ade20k_image_id,
    check_spec,
    cityscapes_annotation,
    cityscapes_image_id,
    generate,
    read_manifest,
    write_ade20k_image,
    write_cityscapes_image,
)

__all__ = [
    "ADE_LOOKS",
    "CITYSCAPES",
    "MANIFEST",
    "MARKER",
    "MIN_SIDE",
    "SPLIT_CODES",
    "ClassLook",
    "Layout",
    "Region",
    "SyntheticSpec",
    "ade20k_category_file",
    "ade20k_image_id",
    "ade20k_layout",
    "ade20k_scene",
    "check_spec",
    "cityscapes_annotation",
    "cityscapes_image_id",
    "cityscapes_layout",
    "cityscapes_scene",
    "generate",
    "image_rng",
    "read_manifest",
    "render",
    "visible_instances",
    "write_ade20k_image",
    "write_cityscapes_image",
]
