"""The source and target domains of the synthetic scenes (issue 13): same classes and formats, a real shift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from castlib.data.classes import CITYSCAPES
from castlib.data.datasets import DATASETS
from castlib.data.domains import SOURCE, TARGET, domain_style
from castlib.data.synthetic import SyntheticSpec, ade20k_scene, cityscapes_scene, generate, read_manifest
from castlib.errors import DataError


def _scenes(scene, spec: SyntheticSpec, n: int = 6):
    return [scene(spec, "train", i) for i in range(n)]


def test_the_target_style_leaves_colours_and_light_as_they_were():
    colour = (0.2, 0.3, 0.6)
    assert np.array_equal(TARGET.colour(colour), np.array(colour))
    u, v = np.random.default_rng(0).random((2, 5, 5))
    assert np.array_equal(TARGET.shade(u, v), 1.08 - 0.25 * v)


def test_the_source_domain_draws_other_scenes_of_the_same_classes_with_another_look():
    target = SyntheticSpec("cityscapes", 6, 1, 128, 256, seed=0)
    source = SyntheticSpec("cityscapes", 6, 1, 128, 256, seed=0, domain="source")
    t, s = _scenes(cityscapes_scene, target), _scenes(cityscapes_scene, source)
    assert all(not np.array_equal(a[2], b[2]) for a, b in zip(t, s, strict=True))  # other images
    things = lambda scenes: {r.name for layout, _, _ in scenes for r in layout.regions if r.instance}  # noqa: E731
    assert things(s) <= set(CITYSCAPES.names) and len(things(s) & things(t)) >= 2
    # the camera sits lower and objects are larger: mean thing height relative to the image grows
    height = lambda scenes: np.mean([np.ptp(r.polygon[:, 1]) for layout, _, _ in scenes  # noqa: E731
                                     for r in layout.regions if r.instance])
    assert height(s) > 1.1 * height(t)
    # the palette shifts: the mean colour of the images differs by more than their noise
    mean_colour = lambda scenes: np.mean([img.reshape(-1, 3).mean(0) for _, _, img in scenes], 0)  # noqa: E731
    assert np.abs(mean_colour(s) - mean_colour(t)).max() > 8


def test_ade20k_scenes_shift_too():
    target = SyntheticSpec("ade20k", 4, 1, 160, 0, seed=0)
    source = SyntheticSpec("ade20k", 4, 1, 160, 0, seed=0, domain="source")
    for (_, _, a), (_, _, b) in zip(_scenes(ade20k_scene, target, 4), _scenes(ade20k_scene, source, 4), strict=True):
        assert not np.array_equal(a, b)


def test_a_source_set_is_written_in_the_same_format_and_read_by_the_same_loader(tmp_path):
    spec = SyntheticSpec("cityscapes", 3, 1, 128, 256, seed=0, domain="source")
    root = generate(spec, tmp_path / "source")
    assert read_manifest(root) == spec
    sample = DATASETS["cityscapes"](root, "train")[0]
    assert sample.masks.shape[0] == len(sample.labels) > 0


def test_an_unknown_domain_is_named():
    assert domain_style("source") is SOURCE
    with pytest.raises(ValueError, match="unknown synthetic domain 'winter'"):
        cityscapes_scene(SyntheticSpec("cityscapes", 1, 1, 64, 128, seed=0, domain="winter"), "train", 0)


def test_a_set_drawn_in_an_older_style_is_refused_not_reused(tmp_path):
    spec = SyntheticSpec("cityscapes", 2, 1, 64, 128, seed=0, domain="source")
    root = generate(spec, tmp_path / "source")
    manifest = json.loads((root / "synthetic.json").read_text())
    manifest["style"]["density"] = 2.0  # as if castlib.data.domains had drawn this set with another density
    (root / "synthetic.json").write_text(json.dumps(manifest))
    image = next((root / "leftImg8bit").rglob("*.png"))
    before = image.read_bytes()
    with pytest.raises(DataError, match="another style of the 'source' domain.*remove the folder"):
        generate(spec, root)
    assert image.read_bytes() == before
    # a target set written before styles were recorded is the original drawing, still reused
    target = SyntheticSpec("cityscapes", 2, 1, 64, 128, seed=0)
    old = generate(target, tmp_path / "target")
    manifest = json.loads((old / "synthetic.json").read_text())
    del manifest["style"]
    (old / "synthetic.json").write_text(json.dumps(manifest))
    assert generate(target, old) == old
