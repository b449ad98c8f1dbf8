"""The instance-aware negative sampler: exact successive-sampling law, exclusions, score and embedding variants."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from castlib.losses import (
    SCORES,
    debiased_weights,
    gumbel_top_k,
    pixel_contrastive_loss,
    pseudo_probability_embedding,
    successive_sampling,
)
from castlib.losses.debiased_sampling import ChunkWeights
from tests.contrastive_fixtures import instance_predictions

SAMPLERS = {
    "gumbel_top_k": gumbel_top_k,
    "successive_sampling": successive_sampling,
    "successive_sampling, completed": lambda w, k, g: successive_sampling(w, k, g, trials=2),
}


def ordered_law(weights, draws):
    """Exact probability of every ordered sequence of draws under successive sampling."""
    law = {}
    for seq in itertools.permutations(range(len(weights)), draws):
        p, left = 1.0, sum(weights)
        for i in seq:
            p *= weights[i] / left
            left -= weights[i]
        law[seq] = p
    return law


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("weights", [[0.9, 0.6, 0.3, 0.1, 0.05], [0.04, 0.02, 0.01, 0.004, 0.002]],
                         ids=["large", "small"])
def test_the_sampler_follows_successive_sampling_exactly(sampler, weights):
    rows, draws = 40_000, 2
    g = torch.Generator().manual_seed(0)
    drawn = SAMPLERS[sampler](torch.tensor([weights]).repeat(rows, 1), draws, g)
    law = ordered_law(weights, draws)
    counts = {seq: 0 for seq in law}
    for seq, n in zip(*torch.unique(drawn, dim=0, return_counts=True), strict=True):
        counts[tuple(seq.tolist())] += int(n)
    observed = [counts[s] for s in law]
    expected = [rows * p for p in law.values()]
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    first = torch.bincount(drawn[:, 0], minlength=len(weights)) / rows  # the first draw is proportional to w
    torch.testing.assert_close(first, torch.tensor(weights) / sum(weights), atol=0.01, rtol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_inclusion_frequencies_match_the_exact_inclusion_probabilities(sampler):
    weights, draws, rows = [1.0, 0.8, 0.5, 0.3, 0.2, 0.1], 3, 30_000
    inclusion = torch.zeros(len(weights), dtype=torch.float64)
    for seq, p in ordered_law(weights, draws).items():
        inclusion[list(seq)] += p
    drawn = SAMPLERS[sampler](torch.tensor([weights]).repeat(rows, 1), draws, torch.Generator().manual_seed(1))
    freq = torch.bincount(drawn.flatten(), minlength=len(weights)).double() / rows
    z = (freq - inclusion) / (inclusion * (1 - inclusion) / rows).sqrt()
    assert z.abs().max() < 4.5  # not proportional to w: drawing without replacement flattens it
    assert not torch.allclose(inclusion, draws * torch.tensor(weights, dtype=torch.float64) / sum(weights), atol=0.02)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_sampler_never_draws_a_zero_weight_and_never_draws_twice(sampler):
    g = torch.Generator().manual_seed(2)
    weights = torch.rand(500, 40, generator=g) * (torch.rand(500, 40, generator=g) < 0.5)
    weights[:10] = 0  # rows with nothing to draw
    drawn = SAMPLERS[sampler](weights, 30, g)
    valid = drawn >= 0
    assert (weights.gather(1, drawn.clamp(min=0))[valid] > 0).all()
    assert torch.equal(valid.sum(1), (weights > 0).sum(1).clamp(max=30))  # -1 only where candidates ran out
    assert (valid[:, :-1] | ~valid[:, 1:]).all()  # the -1 slots come last
    for row, ok in zip(drawn, valid, strict=True):
        assert row[ok].unique().numel() == int(ok.sum())


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_the_anchor_itself_is_never_a_negative(impl):
    g = torch.Generator().manual_seed(3)
    preds = instance_predictions(2, 8, 8, 10, 3, instances=6, generator=g)
    z = F.normalize(torch.randn(2, 64, 8, generator=g), dim=-1)
    for embedding in ("fusion", "uniform"):
        out = pixel_contrastive_loss(z, z, preds.mask_logits, preds.class_logits, impl=impl, embedding=embedding,
                                     num_negatives=100, chunk_size=24, generator=g)
        anchors = torch.arange(128)[:, None]
        assert not (out.negatives == anchors).any()
        assert ((out.negatives >= 0).sum(1) == 100).all()


def entropy(weights):
    p = weights / weights.sum(1, keepdim=True)
    return -(p * p.clamp(min=1e-300).log()).sum(1)


def test_squared_scores_sharpen_and_square_roots_flatten_the_sampling_distribution():
    preds = instance_predictions(2, 12, 12, 20, 5, instances=10, generator=torch.Generator().manual_seed(4))
    y = pseudo_probability_embedding(preds.mask_logits.double(), preds.class_logits.double())
    h = {score: entropy(debiased_weights(y, y, score)) for score in ("squared", "original", "sqrt")}
    assert (h["squared"] < h["original"]).all() and (h["original"] < h["sqrt"]).all()
    g = torch.Generator().manual_seed(5)  # and so are the draws: their spread over candidates
    spread = {}
    for score in ("squared", "original", "sqrt"):
        weights = debiased_weights(y[:1], y, score).repeat(20_000, 1)
        weights[:, 0] = 0
        counts = torch.bincount(gumbel_top_k(weights, 1, g)[:, 0], minlength=y.shape[0]).double()
        spread[score] = entropy(counts[None])[0]
    assert spread["squared"] < spread["original"] < spread["sqrt"]


def test_uniform_sampling_weighs_every_candidate_alike():
    preds = instance_predictions(2, 6, 6, 8, 3, instances=5, generator=torch.Generator().manual_seed(6))
    y = pseudo_probability_embedding(preds.mask_logits, preds.class_logits, "uniform")
    assert y.shape == (72, 0)
    assert (debiased_weights(y, y, "original") == 1).all()
    z = F.normalize(torch.randn(2, 36, 8), dim=-1)
    counts = torch.zeros(72)
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        out = pixel_contrastive_loss(z, z, preds.mask_logits, preds.class_logits, embedding="uniform",
                                     num_negatives=10, generator=g)
        counts += torch.bincount(out.negatives.flatten(), minlength=72)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3  # every candidate drawn equally often


def test_the_fast_path_reads_the_same_weights_as_the_dense_matrix_with_each_anchor_excluded():
    preds = instance_predictions(2, 6, 6, 8, 3, instances=5, generator=torch.Generator().manual_seed(8))
    y = pseudo_probability_embedding(preds.mask_logits.double(), preds.class_logits.double())
    index = torch.randint(0, 72, (12, 30), generator=torch.Generator().manual_seed(9))
    index[:, 0] = torch.arange(8, 20)  # each anchor's own column
    for score in SCORES:
        dense = debiased_weights(y[8:20], y, score)
        dense[torch.arange(12), torch.arange(8, 20)] = 0
        lazy = ChunkWeights(y[8:20], y, score, offset=8)
        torch.testing.assert_close(lazy.gather(1, index), dense.gather(1, index), rtol=0, atol=0)
        rows = torch.tensor([0, 5, 11])
        torch.testing.assert_close(lazy[rows], dense[rows], rtol=0, atol=0)
        assert (lazy.gather(1, index)[:, 0] == 0).all()
