"""Proposition 3.1 (supplementary C): one gradient step on L_pxl grows the expected margin by about p * lambda."""

import pytest
import torch
import torch.nn.functional as F

from castlib.losses import pixel_contrastive_loss

ANCHORS, R, D, STEP = 100, 20, 128, 0.1


def margin_growth(p: float, seed: int = 0) -> float:
    """E[delta s+ - delta s-] / lambda after one step of size lambda on z_a (supplementary C's setting).

    Image i holds anchor pixel 0 and its R negatives (pixels 1..R): each is inter-instance
    (a random unit vector, nearly orthogonal to z+) with probability p, else intra-instance (z+
    up to small noise). The negatives' own rows draw nothing, so they add nothing to the loss.
    """
    g = torch.Generator().manual_seed(seed)
    unit = lambda *shape: F.normalize(torch.randn(*shape, D, generator=g, dtype=torch.float64), dim=-1)
    z_plus = unit(ANCHORS)
    inter = torch.rand(ANCHORS, R, generator=g) < p
    intra = F.normalize(z_plus[:, None] + 0.05 * unit(ANCHORS, R), dim=-1)  # z+ up to small noise
    negatives = torch.where(inter[..., None], unit(ANCHORS, R), intra)
    z_weak = torch.cat([unit(ANCHORS)[:, None], negatives], dim=1).requires_grad_()  # [ANCHORS, 1 + R, D]
    z_strong = torch.cat([z_plus[:, None], unit(ANCHORS, R)], dim=1)
    drawn = torch.full((ANCHORS, 1 + R, R), -1)
    drawn[:, 0] = torch.arange(ANCHORS)[:, None] * (1 + R) + torch.arange(1, R + 1)
    logits = torch.zeros(ANCHORS, 2, 1 + R, dtype=torch.float64)
    out = pixel_contrastive_loss(z_weak, z_strong, logits, logits, negatives=drawn.flatten(0, 1), temperature=1.0)
    (grad,) = torch.autograd.grad(out.loss * ANCHORS * (1 + R), z_weak)  # the loss is a mean over all pixels
    step = -STEP * grad[:, 0]  # z_a' - z_a
    probe = unit(ANCHORS)  # a fresh inter-instance negative z^-
    delta_pos, delta_neg = (step * z_plus).sum(-1), (step * probe).sum(-1)
    return ((delta_pos - delta_neg).mean() / STEP).item()


@pytest.mark.parametrize("p", [0.6, 0.8, 1.0])
def test_one_step_grows_the_expected_margin_by_about_p_lambda(p):
    growth = margin_growth(p)
    # sum_r alpha_r = R / (R + 1) here, as every similarity is near 0: the proof's "= 1" up to 1 / (R + 1)
    assert growth == pytest.approx(p * R / (R + 1), abs=0.05)
    assert growth == pytest.approx(p, abs=0.1)


def test_a_larger_share_of_inter_instance_negatives_grows_the_margin_more():
    growths = [margin_growth(p, seed=1) for p in (0.2, 0.6, 1.0)]
    assert all(a < b for a, b in zip(growths[:-1], growths[1:], strict=True))
    assert growths[0] > 0
