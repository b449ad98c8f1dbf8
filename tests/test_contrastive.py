"""L_pxl: fast and reference agree, the formulas hold on hand-checked cases, the memory bank, diagnostics."""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from castlib.config import load_config
from castlib.losses import (
    EMBEDDINGS,
    SCORES,
    MemoryBank,
    contrastive_options,
    pixel_contrastive_loss,
    pseudo_probability_embedding,
)
from tests.contrastive_fixtures import instance_predictions

OPTIONS = list(itertools.product(SCORES, EMBEDDINGS, ("infonce", "hinge"), ("batch", "memory_bank")))


def inputs(batch=2, height=4, width=5, dim=16, queries=6, classes=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    preds = instance_predictions(batch, height, width, queries, classes, instances=4, confidence=2.0, generator=g)
    unit = lambda: F.normalize(torch.randn(batch, height * width, dim, generator=g, dtype=dtype), dim=-1)
    return unit(), unit(), preds.mask_logits.to(dtype), preds.class_logits.to(dtype), preds.instance_ids


def filled_bank(embedding, entries=15, size=30, dim=16, seed=1):
    """A bank holding the pixels of an earlier batch."""
    z, _, mask_logits, class_logits, _ = inputs(dim=dim, seed=seed)
    bank = MemoryBank(size)
    bank.push(z.flatten(0, 1)[:entries], pseudo_probability_embedding(mask_logits, class_logits, embedding)[:entries])
    return bank


def run(impl, z_weak, z_strong, *rest, **kw):
    z_weak, z_strong = z_weak.clone().requires_grad_(), z_strong.clone().requires_grad_()
    out = pixel_contrastive_loss(z_weak, z_strong, *rest, impl=impl, **kw)
    out.loss.backward()
    return out, z_weak.grad, z_strong.grad


@pytest.mark.parametrize("score,embedding,loss,scope", OPTIONS)
def test_fast_and_reference_give_the_same_loss_and_gradients_on_the_same_draw(score, embedding, loss, scope):
    z_weak, z_strong, mask_logits, class_logits, _ = inputs()
    opts = dict(score=score, embedding=embedding, loss=loss, scope=scope, num_negatives=12, chunk_size=7)
    banks = [filled_bank(embedding, size=50) for _ in range(2)] if scope == "memory_bank" else [None, None]
    for first, second in (("fast", "reference"), ("reference", "fast")):
        b1, b2 = copy.deepcopy(banks[0]), copy.deepcopy(banks[1])
        drawn, *grads = run(first, z_weak, z_strong, mask_logits, class_logits, bank=b1,
                            generator=torch.Generator().manual_seed(3), **opts)
        replay, *replay_grads = run(second, z_weak, z_strong, mask_logits, class_logits, bank=b2,
                                    negatives=drawn.negatives, **opts)
        assert torch.equal(replay.negatives, drawn.negatives)
        assert replay.loss.item() == pytest.approx(drawn.loss.item(), rel=1e-12, abs=1e-14)
        assert replay.margin.item() == pytest.approx(drawn.margin.item(), rel=1e-12)
        for g, h in zip(grads, replay_grads, strict=True):
            torch.testing.assert_close(h, g, rtol=1e-10, atol=1e-14)
        if scope == "memory_bank":
            assert (drawn.negatives >= z_weak.shape[0] * z_weak.shape[1]).any()  # some negatives from the bank
            torch.testing.assert_close(b1.z, b2.z)


@pytest.mark.parametrize("loss", ["infonce", "hinge"])
def test_slots_without_a_candidate_add_nothing_and_both_implementations_agree(loss):
    z_weak, z_strong, mask_logits, class_logits, _ = inputs(batch=1, height=2, width=4)
    fast, *grads = run("fast", z_weak, z_strong, mask_logits, class_logits, num_negatives=10, loss=loss)
    assert (fast.negatives[:, 7:] == -1).all() and (fast.negatives[:, :7] >= 0).all()  # 7 candidates each
    ref, *ref_grads = run("reference", z_weak, z_strong, mask_logits, class_logits, negatives=fast.negatives, loss=loss)
    assert ref.loss.item() == pytest.approx(fast.loss.item(), rel=1e-12)
    for g, h in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(h, g, rtol=1e-10, atol=1e-14)
    trimmed, *_ = run("fast", z_weak, z_strong, mask_logits, class_logits, negatives=fast.negatives[:, :7], loss=loss)
    assert trimmed.loss.item() == pytest.approx(fast.loss.item(), rel=1e-12)


def test_a_single_pixel_has_no_candidate_and_no_loss():
    z_weak, z_strong = F.normalize(torch.randn(2, 1, 1, 4), dim=-1)
    mask_logits, class_logits = torch.randn(1, 3, 1), torch.randn(1, 3, 4)
    for impl in ("fast", "reference"):
        out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, num_negatives=3, impl=impl)
        assert out.loss.item() == 0 and (out.negatives == -1).all()


def hand_case():
    """Three pixels in 2-D; anchor 0 has negatives 1 and 2, the others none."""
    s = 1 / math.sqrt(2)
    z_weak = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [s, s]]], dtype=torch.float64)
    z_strong = torch.tensor([[[s, s], [0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    negatives = torch.tensor([[1, 2], [-1, -1], [-1, -1]])
    mask_logits, class_logits = torch.zeros(1, 2, 3, dtype=torch.float64), torch.zeros(1, 2, 3, dtype=torch.float64)
    return z_weak, z_strong, mask_logits, class_logits, negatives


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_the_hinge_equals_its_formula_on_a_hand_checked_case(impl):
    z_weak, z_strong, mask_logits, class_logits, negatives = hand_case()
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, negatives=negatives,
                                 loss="hinge", margin=0.1, impl=impl)
    # anchor 0: s+ = 0.7071, s- = (0, 0.7071): mean(max(0, 0.1 - 0.7071), max(0, 0.1 - 0)) = 0.05
    assert out.loss.item() == pytest.approx(0.05 / 3, rel=1e-12)
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, negatives=negatives,
                                 loss="hinge", margin=0.8, impl=impl)
    assert out.loss.item() == pytest.approx(((0.8 - 1 / math.sqrt(2)) + 0.8) / 2 / 3, rel=1e-12)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_infonce_equals_its_formula_on_a_hand_checked_case(impl):
    z_weak, z_strong, mask_logits, class_logits, negatives = hand_case()
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, negatives=negatives,
                                 temperature=0.5, impl=impl)
    s = 1 / math.sqrt(2)
    anchor0 = -math.log(math.exp(s / 0.5) / (math.exp(s / 0.5) + math.exp(0.0) + math.exp(s / 0.5)))
    assert out.loss.item() == pytest.approx(anchor0 / 3, rel=1e-12)  # anchors without negatives add 0
    assert out.margin.item() == pytest.approx((s + 1 + s) / 3 - (0 + s) / 2, rel=1e-12)


def test_the_false_negative_rate_counts_negatives_in_the_anchors_own_instance():
    z_weak, z_strong, mask_logits, class_logits, _ = hand_case()
    negatives = torch.tensor([[1, 2], [0, -1], [0, 1]])
    ids = torch.tensor([[5, 5, -1]])  # pixel 2's instance is unknown
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, negatives=negatives, instance_ids=ids)
    assert out.fnr.item() == pytest.approx(2 / 2)  # (0, 1) and (1, 0) share instance 5; pairs with pixel 2 left out
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, negatives=negatives,
                                 instance_ids=torch.tensor([[5, 6, 5]]))
    assert out.fnr.item() == pytest.approx(2 / 5)  # (0, 2) and (2, 0) of the 5 drawn pairs


def test_background_pixels_are_no_instance_for_the_false_negative_rate():
    z_weak, z_strong, mask_logits, class_logits, _ = hand_case()
    negatives = torch.tensor([[1, 2], [0, -1], [0, 1]])
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, negatives=negatives,
                                 instance_ids=torch.tensor([[0, 0, 7]]))
    assert out.fnr.isnan()  # two background pixels are no false negative; anchor 2 meets only background
    assert out.background_share.item() == pytest.approx(2 / 2)  # anchor 2's negatives 0 and 1
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, negatives=negatives,
                                 instance_ids=torch.tensor([[3, 0, 3]]))
    assert out.fnr.item() == pytest.approx(2 / 2)  # (0, 2) and (2, 0); the pairs with background pixel 1 left out
    assert out.background_share.item() == pytest.approx(2 / 4)  # (0, 1) and (2, 1) of the instance anchors' 4


def test_the_instance_aware_sampler_draws_far_fewer_false_negatives_than_uniform_sampling():
    g = torch.Generator().manual_seed(0)
    preds = instance_predictions(2, 16, 16, 30, 8, instances=12, generator=g)
    z = F.normalize(torch.randn(2, 256, 32, generator=g), dim=-1)
    fnr = {embedding: pixel_contrastive_loss(z, z, preds.mask_logits, preds.class_logits, embedding=embedding,
                                             num_negatives=50, instance_ids=preds.instance_ids, generator=g).fnr
           for embedding in EMBEDDINGS}
    assert fnr["uniform"] > 0.05
    assert fnr["fusion"] < 0.2 * fnr["uniform"] and fnr["mask_only"] < 0.2 * fnr["uniform"]


def _pad(t: torch.Tensor, height: int, width: int, size: tuple[int, int], fill: torch.Tensor) -> torch.Tensor:
    """``t [B, C, height*width]`` in the top-left of a ``size`` grid (``[B, C, h*w]``), ``fill`` elsewhere."""
    out = fill.clone()
    out.view(*t.shape[:2], *size)[..., :height, :width] = t.view(*t.shape[:2], height, width)
    return out


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_a_padded_batch_gives_the_same_l_pxl_as_its_unpadded_crops(impl):
    z_weak, z_strong, mask_logits, class_logits, ids = inputs()  # two 4 x 5 maps
    size, g = (6, 7), torch.Generator().manual_seed(9)
    noise = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # what padded pixels hold
    pad_z = lambda z: _pad(z.transpose(1, 2), 4, 5, size, noise(2, 16, 42)).transpose(1, 2)
    padded = (F.normalize(pad_z(z_weak), dim=-1), F.normalize(pad_z(z_strong), dim=-1),
              _pad(mask_logits, 4, 5, size, noise(2, 6, 42)), class_logits)
    valid = _pad(torch.ones(2, 1, 20, dtype=torch.bool), 4, 5, size, torch.zeros(2, 1, 42, dtype=torch.bool))[:, 0]
    for scope in ("batch", "memory_bank"):
        banks = [filled_bank("fusion", size=50) if scope == "memory_bank" else None for _ in range(2)]
        opts = dict(impl=impl, scope=scope, num_negatives=12)
        crop = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, instance_ids=ids, bank=banks[0],
                                      generator=torch.Generator().manual_seed(1), **opts)
        pad = pixel_contrastive_loss(*padded, valid=valid, instance_ids=_pad(ids[:, None], 4, 5, size,
                                     torch.full((2, 1, 42), 3))[:, 0], bank=banks[1],
                                     generator=torch.Generator().manual_seed(1), **opts)
        assert pad.loss.item() == pytest.approx(crop.loss.item(), rel=1e-12)
        assert pad.margin.item() == pytest.approx(crop.margin.item(), rel=1e-12)
        assert pad.fnr.item() == pytest.approx(crop.fnr.item())
        where = valid.flatten().nonzero().squeeze(1)  # padded-batch index of crop pixel a
        expected = torch.where(crop.negatives >= 40, crop.negatives + 84 - 40, where[crop.negatives.clamp(0, 39)])
        assert torch.equal(pad.negatives[where], torch.where(crop.negatives < 0, -1, expected))
        assert (pad.negatives[~valid.flatten()] == -1).all()  # padded pixels are no anchors ...
        assert not torch.isin(pad.negatives, (~valid.flatten()).nonzero()).any()  # ... and no candidates
        if scope == "memory_bank":
            torch.testing.assert_close(banks[1].z, banks[0].z)  # only valid pixels were pushed


def test_the_memory_bank_keeps_the_newest_entries_first_in_first_out():
    bank = MemoryBank(10_000)
    pushed = torch.arange(25_000, dtype=torch.float64)
    for start in range(0, 25_000, 3_000):
        chunk = pushed[start:start + 3_000]
        bank.push(chunk[:, None].repeat(1, 4), -chunk[:, None])
    assert len(bank) == 10_000
    assert sorted(bank.z[:, 0].tolist()) == list(range(15_000, 25_000))
    torch.testing.assert_close(bank.y[:, 0], -bank.z[:, 0])  # pairs stay together
    bank.push(torch.full((12_000, 4), -1.0, dtype=torch.float64), torch.zeros(12_000, 1, dtype=torch.float64))
    assert (bank.z == -1).all()  # a push larger than the bank keeps its own newest entries


def test_after_k_steps_the_bank_holds_pixels_of_k_distinct_batches_and_of_both_halves():
    batch, pixels, dim, steps = 8, 30, 16, 4
    bank = MemoryBank(size=400, batches=steps)  # 100 of each batch's 240 pixels
    g = torch.Generator().manual_seed(0)
    pushed = []  # z of every pixel pushed so far, row t * B * N + b * N + p
    for _ in range(steps + 2):
        z, _, mask_logits, class_logits, _ = inputs(batch=batch, height=5, width=6, dim=dim, seed=len(pushed))
        pixel_contrastive_loss(z, z, mask_logits, class_logits, scope="memory_bank", bank=bank, num_negatives=8,
                               generator=g)
        pushed.append(z.flatten(0, 1))
    rows = torch.cdist(bank.z, torch.cat(pushed)).argmin(1)
    step, image = rows // (batch * pixels), rows // pixels % batch
    assert len(bank) == 400 and set(step.tolist()) == {2, 3, 4, 5}  # the last k = 4 batches, the oldest gone
    for t in (2, 3, 4, 5):
        assert (step == t).sum() == 100
        halves = set((image[step == t] >= batch // 2).tolist())
        assert halves == {False, True}  # labelled (first half) and pseudo-labelled images alike


def test_memory_bank_negatives_come_from_the_bank_and_the_batch_joins_it_afterwards():
    z_weak, z_strong, mask_logits, class_logits, _ = inputs()  # 40 pixels
    bank = filled_bank("fusion", entries=30, size=50)
    old = bank.z.clone()
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, scope="memory_bank", bank=bank,
                                 num_negatives=30, generator=torch.Generator().manual_seed(0))
    assert (out.negatives >= 40).any() and out.negatives.max() < 40 + 30
    first = out.negatives[:, :1]  # candidate 40 + j is the bank's slot j
    replay = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, negatives=first, impl="reference",
                                    scope="memory_bank", bank=filled_bank("fusion", entries=30, size=50))
    flat, candidates = z_weak.flatten(0, 1), torch.cat([z_weak.flatten(0, 1), old])
    expected = (flat * z_strong.flatten(0, 1)).sum(-1).mean() - (flat * candidates[first[:, 0]]).sum(-1).mean()
    assert replay.margin.item() == pytest.approx(expected.item(), rel=1e-12)
    kept = torch.cat([old[20:], flat])  # 50 newest: the last 20 old entries, then the batch
    distances = torch.cdist(bank.z, kept)  # the same rows, in slot order
    assert distances.min(dim=1).values.max() < 1e-6 and distances.min(dim=0).values.max() < 1e-6


def test_a_memory_bank_state_restores_the_same_training():
    z_weak, z_strong, mask_logits, class_logits, _ = inputs()
    bank = filled_bank("fusion")
    restored = MemoryBank(30)
    restored.load_state_dict(copy.deepcopy(bank.state_dict()))
    outs = [pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, scope="memory_bank", bank=b,
                                   generator=torch.Generator().manual_seed(5)) for b in (bank, restored)]
    assert torch.equal(outs[0].negatives, outs[1].negatives) and outs[0].loss == outs[1].loss
    with pytest.raises(ValueError, match="holds 30 entries"):
        MemoryBank(10).load_state_dict(bank.state_dict())


def test_the_same_generator_seed_draws_the_same_negatives():
    z_weak, z_strong, mask_logits, class_logits, _ = inputs()
    draw = lambda seed: pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits,
                                               generator=torch.Generator().manual_seed(seed)).negatives
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))


def test_the_config_section_gives_the_options():
    z_weak, z_strong, mask_logits, class_logits, _ = inputs()
    section = load_config("smoke").loss.contrastive
    out = pixel_contrastive_loss(z_weak, z_strong, mask_logits, class_logits, **contrastive_options(section))
    assert out.negatives.shape == (40, section.num_negatives)


def test_bad_options_and_inputs_are_named():
    z_weak, z_strong, mask_logits, class_logits, _ = inputs()
    args = (z_weak, z_strong, mask_logits, class_logits)
    with pytest.raises(ValueError, match="unknown contrastive option.*'temprature'"):
        pixel_contrastive_loss(*args, temprature=0.1)
    with pytest.raises(ValueError, match="'score' must be one of"):
        pixel_contrastive_loss(*args, score="cubed")
    with pytest.raises(ValueError, match="impl must be one of"):
        pixel_contrastive_loss(*args, impl="quick")
    with pytest.raises(ValueError, match="needs a MemoryBank"):
        pixel_contrastive_loss(*args, scope="memory_bank")
    with pytest.raises(ValueError, match="takes no bank"):
        pixel_contrastive_loss(*args, bank=MemoryBank(4))
    with pytest.raises(ValueError, match=r"mask_logits must be \[B, K, N\]"):
        pixel_contrastive_loss(z_weak, z_strong, mask_logits[..., :5], class_logits)
    with pytest.raises(ValueError, match="never its own negative; anchor 3"):
        pixel_contrastive_loss(*args, negatives=torch.full((40, 1), 3))
    with pytest.raises(ValueError, match="must index the 40 candidates"):
        pixel_contrastive_loss(*args, negatives=torch.full((40, 1), 40))
    with pytest.raises(ValueError, match="y of dim 10, this batch's is 6"):
        pixel_contrastive_loss(*args, scope="memory_bank", bank=filled_bank("fusion"), embedding="mask_only")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_fast_implementation_runs_on_cuda_and_matches_the_cpu_reference():
    z_weak, z_strong, mask_logits, class_logits, _ = inputs(dtype=torch.float32)
    on_gpu = [t.cuda() for t in (z_weak, z_strong, mask_logits, class_logits)]
    fast, *grads = run("fast", *on_gpu, generator=torch.Generator("cuda").manual_seed(0))
    ref, *ref_grads = run("reference", z_weak, z_strong, mask_logits, class_logits, negatives=fast.negatives.cpu())
    assert fast.loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)
    for g, h in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g.cpu(), h, rtol=1e-4, atol=1e-6)
