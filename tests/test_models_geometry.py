"""Padding to the encoder's stride and resampling predictions back to the exact image extent."""

from __future__ import annotations

import torch

from castlib.models.geometry import crop_to_extent, normalize, pad_to_multiple


def test_padding_reaches_the_next_multiple_at_bottom_and_right():
    x = torch.rand(2, 3, 100, 150)
    padded = pad_to_multiple(x, 14)
    assert padded.shape[-2:] == (112, 154)
    assert torch.equal(padded[..., :100, :150], x) and padded[..., 100:, :].abs().sum() == 0
    assert pad_to_multiple(padded, 14) is padded


def test_normalize_maps_the_imagenet_mean_to_zero():
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert normalize(mean).abs().max() < 1e-6


def test_crop_samples_the_padded_map_at_the_image_extents_cell_centres():
    """A map whose value is the x (or y) pixel coordinate of each cell centre of a 112 x 154 padded image, cut back
    to the 100 x 150 image: every output cell holds its own centre's coordinate in the image."""
    padded, extent, stride = (112, 154), (100, 150), 1.75
    h, w = round(padded[0] / stride), round(padded[1] / stride)
    ys = ((torch.arange(h) + 0.5) * padded[0] / h).view(h, 1).expand(h, w)
    xs = ((torch.arange(w) + 0.5) * padded[1] / w).view(1, w).expand(h, w)
    out = crop_to_extent(torch.stack([ys, xs])[None], extent, padded)
    oh, ow = out.shape[-2:]
    assert (oh, ow) == (round(extent[0] / stride), round(extent[1] / stride))
    want_y = ((torch.arange(oh) + 0.5) * extent[0] / oh).view(oh, 1).expand(oh, ow)
    want_x = ((torch.arange(ow) + 0.5) * extent[1] / ow).view(1, ow).expand(oh, ow)
    inner = (slice(1, -1), slice(1, -1))  # the border cells' samples fall within half a cell of the edge
    assert torch.allclose(out[0, 0][inner], want_y[inner], atol=1e-4)
    assert torch.allclose(out[0, 1][inner], want_x[inner], atol=1e-4)


def test_crop_is_the_identity_without_padding():
    maps = torch.rand(2, 5, 8, 16)
    assert crop_to_extent(maps, (112, 224), (112, 224)) is maps


def test_the_strong_map_resampled_into_the_weak_frame_reads_each_cell_at_its_own_location():
    from castlib.models.geometry import resample_into_frame

    frame, size, strong_cells = (112, 224), (8, 16), (8, 16)
    boxes = torch.tensor([[20.0, 30.0, 70.0, 140.0], [0.0, 0.0, 112.0, 224.0]])  # top, left, height, width
    # The strong map holds, at each of its cells, the weak-frame pixel coordinates of that cell's centre.
    r = (torch.arange(strong_cells[0]) + 0.5) / strong_cells[0]
    c = (torch.arange(strong_cells[1]) + 0.5) / strong_cells[1]
    maps = torch.stack([torch.stack(torch.broadcast_tensors(
        (top + r * h)[:, None], (left + c * w)[None, :])) for top, left, h, w in boxes.tolist()]).double()
    resampled, inside = resample_into_frame(maps, boxes, frame, size)
    centres = torch.stack(torch.broadcast_tensors(((torch.arange(8) + 0.5) * 14)[:, None],
                                                  ((torch.arange(16) + 0.5) * 14)[None, :])).double()
    expected_inside = ((centres[0] >= 20) & (centres[0] <= 90) & (centres[1] >= 30) & (centres[1] <= 170))
    assert torch.equal(inside[0], expected_inside) and inside[1].all()
    # Away from the box edge (half a strong cell, where the border is clamped) bilinear reading is exact.
    interior = ((centres[0] - 20 >= 70 / 16) & (90 - centres[0] >= 70 / 16) &
                (centres[1] - 30 >= 140 / 32) & (170 - centres[1] >= 140 / 32))
    torch.testing.assert_close(resampled[0][:, interior], centres[:, interior])
    torch.testing.assert_close(resampled[1], centres)  # the whole frame: the identity
