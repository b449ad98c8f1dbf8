"""Weak and strong views: joint geometry on image and masks, pixel correspondence between views."""

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion
from torchvision import tv_tensors
from torchvision.transforms import v2

from castlib.config import load_config
from castlib.data.sample import InstanceSample, collate
from castlib.data.transforms import EvalView, TrainViews, photometric_transform

STRONG = load_config("smoke").augment.strong


def painted_sample(seed: int = 0, height: int = 96, width: int = 160) -> tuple[InstanceSample, np.ndarray]:
    """Rectangles of distinct colours; the image is painted from the masks."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(20, 235, (12, 3))
    masks = np.zeros((12, height, width), bool)
    image = np.zeros((height, width, 3), np.uint8)
    for k in range(12):
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 30)
        masks[:k, y: y + 20, x: x + 30] = False  # later rectangles occlude earlier ones
        masks[k, y: y + 20, x: x + 30] = True
        image[y: y + 20, x: x + 30] = colours[k]
    keep = masks.any((1, 2))
    sample = InstanceSample(
        image=tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
        masks=tv_tensors.Mask(torch.from_numpy(masks[keep])),
        labels=torch.arange(12)[torch.from_numpy(keep)],
        image_id="painted",
        path="painted.png",
    )
    return sample, colours


@pytest.mark.parametrize("seed", range(6))
def test_the_weak_view_moves_image_and_masks_together(seed):
    torch.manual_seed(seed)
    sample, colours = painted_sample(seed)
    out = TrainViews(crop=(64, 112), short_side=(48, 160), hflip=0.5, strong_options=None)(sample)
    assert out.image.shape == (3, 64, 112) and out.masks.shape[1:] == (64, 112)
    assert out.masks.dtype == torch.bool and all(m.any() for m in out.masks)
    image = (out.image.permute(1, 2, 0).numpy() * 255).round()
    for label, mask in zip(out.labels.tolist(), out.masks.numpy(), strict=True):
        inner = binary_erosion(mask, iterations=3)  # away from resampled (antialiased) edges
        if inner.any():
            assert np.abs(image[inner] - colours[label]).max() <= 2


def test_both_views_stay_in_the_unit_range_where_a_float_resize_rounds_past_1():
    sample, _ = painted_sample(0)
    sample = sample.replace(image=tv_tensors.Image(torch.full_like(sample.image, 255)))  # white: 1.0 everywhere
    views = TrainViews(crop=(64, 112), short_side=(48, 160), hflip=0.5, strong_options=STRONG)
    highest = 0.0
    for seed in range(30):  # a plain float resize of white reaches 1.0000002 within a few sizes
        torch.manual_seed(seed)
        out = views(sample)
        highest = max(highest, float(out.image.max()), float(out.strong.max()))
        assert out.image.min() >= 0 and out.strong.min() >= 0
    assert highest == 1.0


def test_flips_and_crops_do_happen():
    sample, _ = painted_sample(0)
    views = TrainViews(crop=(64, 112), short_side=(96, 96), hflip=0.5, strong_options=None)
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        seen.add(views(sample).masks.numpy().tobytes())
    assert len(seen) >= 10


def _edges(image: torch.Tensor) -> np.ndarray:
    x = image.numpy().sum(0)
    return np.abs(np.diff(x, axis=0))[:, :-1] + np.abs(np.diff(x, axis=1))[:-1, :]


@pytest.mark.parametrize("seed", range(8))
def test_pixel_p_of_the_strong_view_is_pixel_p_of_the_weak_view(seed):
    """The edges of both views line up: their cross-correlation peaks at zero shift."""
    torch.manual_seed(seed)
    sample, _ = painted_sample(seed)
    out = TrainViews(crop=(64, 112), short_side=(64, 160), hflip=0.5, strong_options=STRONG)(sample)
    assert out.strong.shape == out.image.shape
    weak, strong = _edges(out.image), _edges(out.strong)
    weak, strong = weak - weak.mean(), strong - strong.mean()
    scores = {}
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            a = weak[max(dy, 0): weak.shape[0] + min(dy, 0), max(dx, 0): weak.shape[1] + min(dx, 0)]
            b = strong[max(-dy, 0): strong.shape[0] + min(-dy, 0), max(-dx, 0): strong.shape[1] + min(-dx, 0)]
            scores[(dy, dx)] = float((a * b).mean())
    assert max(scores, key=scores.get) == (0, 0)


def test_the_strong_view_is_the_weak_view_when_photometric_transforms_are_off():
    off = {**STRONG, "jitter_p": 0.0, "grayscale": 0.0, "blur_p": 0.0}
    sample, _ = painted_sample(3)
    torch.manual_seed(0)
    out = TrainViews(crop=(64, 112), short_side=(64, 160), hflip=0.5, strong_options=off)(sample)
    assert torch.equal(out.image, out.strong)


def test_photometric_transforms_change_colours_but_not_geometry():
    image = tv_tensors.Image(torch.randint(0, 255, (3, 32, 48), dtype=torch.uint8))
    torch.manual_seed(0)
    out = photometric_transform(STRONG)(image)
    assert out.shape == image.shape and not torch.equal(out, image)


def test_eval_view_resizes_image_and_masks_together():
    sample, _ = painted_sample(1)
    out = EvalView(short_side=48)(sample)
    assert out.image.shape == (3, 48, 80) and out.masks.shape == (len(sample.labels), 48, 80)
    assert out.image.dtype == torch.float32 and out.masks.dtype == torch.bool


def test_collate_pads_variable_sizes_and_marks_valid_pixels():
    a, _ = painted_sample(0, 40, 60)
    b, _ = painted_sample(1, 50, 40)
    batch = collate([EvalView()(a), EvalView()(b)])
    assert batch.images.shape == (2, 3, 50, 60)
    assert batch.valid[0].sum() == 40 * 60 and batch.valid[1].sum() == 50 * 40
    assert [m.shape[1:] for m in batch.masks] == [(50, 60), (50, 60)]
    assert not batch.masks[0][:, 40:].any() and batch.sizes == [(40, 60), (50, 40)]
    assert batch.strong is None and len(batch.labels[1]) == len(b.labels)


def test_a_view_pads_with_the_normalisation_mean_and_marks_the_padding_invalid():
    from castlib.data.sample import PAD_COLOUR
    from castlib.models.geometry import normalize

    sample, _ = painted_sample(0, 40, 60)
    torch.manual_seed(0)
    view = TrainViews(crop=(56, 84), short_side=(40, 40), hflip=0.0, strong_options=STRONG)(sample)
    assert view.valid.shape == (56, 84) and int(view.valid.sum()) == 40 * 60  # resized to itself, then padded
    padded = ~view.valid
    torch.testing.assert_close(normalize(view.image[None])[0][:, padded], torch.zeros(3, int(padded.sum())))
    assert not view.masks[:, padded].any()
    batch = collate([view, EvalView()(painted_sample(1, 70, 84)[0])])
    assert torch.equal(batch.valid[0, :56], view.valid) and not batch.valid[0, 56:].any()
    torch.testing.assert_close(batch.images[0, :, 60:], torch.tensor(PAD_COLOUR)[:, None, None].expand(3, 10, 84))


def test_the_geometric_strong_view_is_a_resized_crop_of_the_weak_view_at_its_box():

    options = {**STRONG, "jitter_p": 0.0, "grayscale": 0.0, "blur_p": 0.0,
               "random_resized_crop": {"enabled": True, "scale": [0.3, 0.6], "ratio": [0.75, 1.3333]}}
    sample, _ = painted_sample(0)
    torch.manual_seed(0)
    view = TrainViews(crop=(56, 84), short_side=(60, 60), hflip=0.5, strong_options=options)(sample)
    top, left, height, width = view.strong_box.int().tolist()
    assert 0.3 * 56 * 84 <= height * width <= 0.6 * 56 * 84 + 84 and view.strong.shape == view.image.shape
    expected = v2.functional.resized_crop(view.image, top, left, height, width, [56, 84], antialias=True)
    torch.testing.assert_close(view.strong, expected)  # no photometric change here: the crop alone
    assert collate([view, view]).strong_box.shape == (2, 4)
    plain = TrainViews(crop=(56, 84), short_side=(60, 60), hflip=0.5, strong_options=STRONG)(sample)
    assert plain.strong_box is None
