"""Residual quantizers: config checks, hand-checked pieces, reconstruction of every code, determinism."""
import itertools

import numpy as np
import pytest
import torch

from conrec_lib.sids import quantizer as quant
from conrec_lib.sids.quantizer import SIDConfig

# A small RQ-VAE that learns the synthetic data below in about a second.
SMALL_VAE = dict(hidden_dims=(128,), latent_dim=32, lr=3e-3, warmup_epochs=20, epochs=60, batch_size=32)


def hierarchical(n=200, d=32, k=8, levels=3, seed=0, noise=0.02):
    """Embeddings with a known residual structure: sum of one vector per level (scale halves per level),
    one distinct true code tuple per item, so a perfect quantizer has no collisions."""
    rng = np.random.default_rng(seed)
    books = [rng.standard_normal((k, d)) * 0.5 ** level for level in range(levels)]
    true = rng.choice(k ** levels, size=n, replace=False)
    digits = np.stack([(true // k ** (levels - 1 - level)) % k for level in range(levels)], axis=1)
    x = sum(book[digits[:, level]] for level, book in enumerate(books)) + noise * rng.standard_normal((n, d))
    return x.astype(np.float32)


@pytest.mark.parametrize("field, value, words", [
    ("levels", 0, "levels=0"),
    ("codebook_size", 1, "codebook_size=1"),
    ("quantizer", "vqvae", "vqvae"),
    ("ema_decay", 1.0, "ema_decay"),
    ("commitment_weight", -1.0, "commitment_weight"),
    ("epochs", 0, "epochs=0"),
    ("cpu_threads", 0, "cpu_threads"),
])
def test_bad_config_values_are_named(field, value, words):
    with pytest.raises(ValueError, match=words):
        SIDConfig(**{field: value})


def test_codebook_larger_than_the_catalogue_names_both_numbers():
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"codebook_size=16 .*\(10\)"):
        quant.fit(x, SIDConfig(codebook_size=16))


def test_nearest_picks_the_closest_codeword_and_the_lower_index_on_ties():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    vectors = torch.tensor([[0.9, 0.0], [0.1, 0.0], [0.5, 0.0]])
    assert quant.nearest(vectors, codebook).tolist() == [1, 0, 0]


def test_usage_stats_counts_used_codes_and_perplexity():
    assert quant.usage_stats(np.array([0, 0, 1, 1]), 4) == (0.5, 2.0)
    assert quant.usage_stats(np.array([3, 3, 3]), 4) == (0.25, 1.0)


def test_ema_update_with_zero_decay_moves_each_codeword_to_the_mean_of_its_residuals():
    model = quant.RQVAE(4, SIDConfig(levels=1, codebook_size=2, latent_dim=2, ema_decay=0.0))
    residual = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    model.ema_update(torch.tensor([[0], [0], [1]]), [residual])
    assert torch.allclose(model.codebooks[0], torch.tensor([[2.0, 0.0], [0.0, 5.0]]), atol=1e-4)


def test_dead_codes_are_reset_onto_residuals_of_their_level():
    model = quant.RQVAE(4, SIDConfig(levels=1, codebook_size=3, latent_dim=2))
    pool = torch.tensor([[7.0, 7.0]])  # the only residual seen this epoch
    usage = torch.tensor([[5.0, 0.0, 2.0]])  # code 1 unused
    n = quant.reset_dead_codes(model, usage, [pool], threshold=1, gen=torch.Generator().manual_seed(0))
    assert n == 1
    assert model.codebooks[0, 1].tolist() == [7.0, 7.0]
    assert model.codebooks[0, 0].tolist() == [0.0, 0.0]  # used codes keep their place


def test_rqkmeans_reconstruction_is_the_sum_of_codewords():
    books = np.array([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]])  # (levels=2, K=2, d=2)
    rq = quant.RQKMeans(books)
    assert rq.reconstruct([[1, 0], [0, 1]]).tolist() == [[10.0, 1.0], [0.0, -1.0]]
    assert rq.encode(np.array([[9.0, -0.8]])).tolist() == [[1, 1]]


@pytest.mark.parametrize("kind", ["rqkmeans", "rqvae"])
def test_reconstruct_is_defined_and_finite_for_every_code(kind):
    x = hierarchical(n=64, d=8, k=4)
    cfg = SIDConfig(quantizer=kind, codebook_size=4, levels=3, **{**SMALL_VAE, "epochs": 3, "warmup_epochs": 1})
    fitted = quant.fit(x, cfg).quantizer
    every_code = np.array(list(itertools.product(range(4), repeat=3)))  # all K^L = 64 tuples
    out = fitted.reconstruct(every_code)
    assert out.shape == (64, 8) and np.isfinite(out).all()
    assert len(np.unique(out.round(5), axis=0)) > 1
    with pytest.raises(ValueError, match="0..3"):
        fitted.reconstruct([[0, 0, 4]])
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        fitted.reconstruct([[0, 0]])


@pytest.mark.parametrize("kind", ["rqkmeans", "rqvae"])
def test_same_seed_gives_the_same_codes_and_codebooks(kind):
    x = hierarchical(n=64, d=8, k=4)
    cfg = SIDConfig(quantizer=kind, codebook_size=4, **{**SMALL_VAE, "epochs": 5, "warmup_epochs": 2})
    a, b = quant.fit(x, cfg).quantizer, quant.fit(x, cfg).quantizer
    assert np.array_equal(a.encode(x), b.encode(x))
    assert np.array_equal(a.codewords(), b.codewords())
    other = quant.fit(x, SIDConfig(**{**cfg.__dict__, "seed": 1})).quantizer
    assert not np.array_equal(a.codewords(), other.codewords())


def test_fit_leaves_global_torch_state_alone():
    rng_state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    quant.fit(hierarchical(n=32, d=8, k=4), SIDConfig(codebook_size=4, epochs=2, warmup_epochs=1, cpu_threads=1))
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("kind", ["rqkmeans", "rqvae"])
def test_clustered_data_uses_most_codes_with_few_collisions(kind):
    x = hierarchical()  # 200 items, true codes distinct, K = 8 per level
    fit = quant.fit(x, SIDConfig(quantizer=kind, codebook_size=8, **SMALL_VAE))
    codes = fit.quantizer.encode(x)
    for level in range(3):
        assert quant.usage_stats(codes[:, level], 8)[0] >= 0.9
    distinct = len(np.unique(codes, axis=0))
    assert distinct >= 0.9 * len(x)


def test_rqvae_history_has_falling_finite_losses_and_no_reset_after_the_last_epoch():
    fit = quant.fit(hierarchical(), SIDConfig(codebook_size=8, **SMALL_VAE))
    h = fit.history
    assert list(h["phase"].unique()) == ["warmup", "quantized"]
    assert len(h) == SMALL_VAE["warmup_epochs"] + SMALL_VAE["epochs"]
    assert np.isfinite(h[["recon", "total"]].to_numpy()).all()
    quantized = h[h["phase"] == "quantized"]
    assert quantized["total"].iloc[-1] < quantized["total"].iloc[0]
    assert h["recon"].iloc[-1] < h["recon"].iloc[0]
    assert quantized["dead_codes_reset"].iloc[-1] == 0
    assert {"utilization_a", "utilization_b", "utilization_c", "commit"} <= set(h.columns)


@pytest.mark.parametrize("kind", ["rqkmeans", "rqvae"])
def test_state_round_trip_reconstructs_the_same(kind):
    x = hierarchical(n=64, d=8, k=4)
    cfg = SIDConfig(quantizer=kind, codebook_size=4, **{**SMALL_VAE, "epochs": 2, "warmup_epochs": 1})
    fitted = quant.fit(x, cfg).quantizer
    again = quant.from_state(cfg, fitted.input_dim, fitted.state())
    codes = fitted.encode(x)
    assert np.array_equal(again.encode(x), codes)
    assert np.array_equal(again.reconstruct(codes), fitted.reconstruct(codes))
