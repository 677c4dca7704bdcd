"""Property tests of the k-quantile math (docs/method.md, incl. "Noise models")."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import ndtr, ndtri

from uniq_tf import kquantile
from uniq_tf._keras import tf

FAST = settings(max_examples=25, deadline=None)
bits_st = st.integers(1, 6)
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
weights_st = arrays(np.float32, st.integers(2, 300), elements=finite)
distribution_st = st.sampled_from(kquantile.DISTRIBUTIONS)


@FAST
@given(w=weights_st, bits=bits_st, distribution=distribution_st)
def test_at_most_k_distinct_values_per_tensor(w, bits, distribution):
    q = kquantile.quantize(w, bits, distribution=distribution).numpy()
    assert len(np.unique(q)) <= 2**bits


@FAST
@given(
    w=arrays(np.float32, (3, 3, 4, 5), elements=finite), bits=bits_st, distribution=distribution_st
)
def test_at_most_k_distinct_values_per_channel(w, bits, distribution):
    q = kquantile.quantize(w, bits, channel_axes=(-1,), distribution=distribution).numpy()
    for c in range(q.shape[-1]):
        assert len(np.unique(q[..., c])) <= 2**bits
    levels, indices = kquantile.codebook(w, bits, (-1,), distribution)
    assert levels.shape == (5, 2**bits)
    per_channel = np.take_along_axis(levels, indices.reshape(-1, 5).T, 1).T
    assert np.array_equal(per_channel.reshape(q.shape), q)


@settings(max_examples=8, deadline=None)
@given(bits=st.integers(1, 4), seed=st.integers(0, 2**16), distribution=distribution_st)
def test_bins_equally_probable_for_gaussian_input(bits, seed, distribution):
    k = 2**bits
    n = 40_000
    w = np.random.default_rng(seed).normal(0.3, 2.0, n).astype(np.float32)
    _, indices = kquantile.codebook(w, bits, distribution=distribution)
    counts = np.bincount(indices.ravel(), minlength=k)
    # Multinomial with p = 1/k: 5 standard deviations, plus the finite-sample error of the fit.
    tolerance = 5 * np.sqrt(n / k * (1 - 1 / k)) + 0.01 * n / k
    assert np.all(np.abs(counts - n / k) <= tolerance), counts


@FAST
@given(
    w=arrays(np.float32, st.integers(8, 300), elements=st.floats(-3, 3, width=32)),
    bits=bits_st,
    high=st.booleans(),
)
def test_noisy_weight_stays_within_half_a_bin(w, bits, high):
    # float32 resolves w_hat - mu only to ~1e-7 |mu|: a near-constant tensor says nothing here.
    assume(np.std(w) > 1e-3 * max(1.0, abs(float(np.mean(w)))))
    scale = 2.0 if high else 1.0
    rows = tf.constant(w[None, :])
    stats = kquantile.fit(rows)
    u = kquantile.uniformize(rows, stats).numpy()
    w_hat = kquantile.noisy_rows(rows, bits, noise_scale=scale).numpy()
    u_hat = ndtr((w_hat.astype(np.float64) - stats.mu.numpy()) / stats.sigma.numpy())
    half_bin = scale / (2 * 2**bits)
    # float32 erf/erfinv round trip: ~1e-4 in u near the tails.
    assert np.all(np.abs(u_hat - np.clip(u, 1e-5, 1 - 1e-5)) <= half_bin + 2e-4)


# Rows (C, N) with C > 1, as per-channel statistics give: ties (a few repeated values) or
# distinct-ish floats. TensorFlow's CPU kernels flush subnormals to zero (1e-45 ties 0).
rows_st = st.tuples(st.integers(1, 4), st.integers(1, 120)).flatmap(
    lambda shape: arrays(np.float32, shape, elements=st.sampled_from(
        [-2.0, -0.5, 0.0, 0.0, 0.25, 1.0, 3.0])) | arrays(np.float32, shape, elements=st.floats(
            -10, 10, allow_subnormal=False, width=32)))


def _spans(w):
    """Per row: [left, right] / N, the span of each weight's ties in the sorted row."""
    s = np.sort(w, axis=1)
    n = w.shape[1]
    left = np.stack([np.searchsorted(s[r], w[r], side="left") for r in range(len(w))]) / n
    right = np.stack([np.searchsorted(s[r], w[r], side="right") for r in range(len(w))]) / n
    return left, right


@FAST
@given(w=rows_st)
def test_ranked_u_is_each_weights_stable_rank_per_row(w):
    stats, u = kquantile.ranked(tf.constant(w))
    u = u.numpy()
    n = w.shape[1]
    np.testing.assert_array_equal(stats.sorted_rows.numpy(), np.sort(w, axis=1))
    # Stable ranks, row by row (ties in index order), computed independently with numpy.
    ranks = np.argsort(np.argsort(w, axis=1, kind="stable"), axis=1, kind="stable")
    np.testing.assert_allclose(u, (ranks + 0.5) / n, rtol=0, atol=1e-6)
    # Hence inside the ties' span, and the mid-rank of uniformize for distinct weights.
    left, right = _spans(w)
    assert np.all((u >= left - 1e-6) & (u <= right + 1e-6))
    distinct = np.isclose(right - left, 1 / n)
    mid = kquantile.uniformize(tf.constant(w), kquantile.fit(tf.constant(w), "empirical"))
    np.testing.assert_allclose(u[distinct], mid.numpy()[distinct], rtol=0, atol=1e-6)


@FAST
@given(w=rows_st, bits=bits_st, high=st.booleans())
def test_empirical_noisy_weight_stays_within_half_a_bin_of_its_span(w, bits, high):
    scale = 2.0 if high else 1.0
    rows = tf.constant(w)
    stats = kquantile.fit(rows, "empirical")  # tf.sort, not ranked()'s argsort
    half = scale / (2 * 2**bits)
    left, right = _spans(w)
    clip = (kquantile.U_CLIP, 1 - kquantile.U_CLIP)
    lower = kquantile.inverse(tf.constant(np.clip(left - half, *clip), tf.float32), stats)
    upper = kquantile.inverse(tf.constant(np.clip(right + half, *clip), tf.float32), stats)
    for _ in range(3):
        w_hat = kquantile.noisy_rows(rows, bits, "empirical", noise_scale=scale).numpy()
        assert np.all((w_hat >= lower.numpy() - 1e-5) & (w_hat <= upper.numpy() + 1e-5))


@FAST
@given(w=weights_st, bits=bits_st, distribution=distribution_st)
def test_bin_index_is_monotone_in_the_weight(w, bits, distribution):
    _, indices = kquantile.codebook(w, bits, distribution=distribution)
    order = np.argsort(w, kind="stable")
    assert np.all(np.diff(indices[order]) >= 0)


@FAST
@given(
    w=arrays(np.float32, st.integers(16, 300), elements=st.floats(-5, 5, width=32)),
    bits=st.integers(1, 8),
)
def test_gaussian_levels_match_closed_form(w, bits):
    k = 2**bits
    levels, indices = kquantile.codebook(w, bits)
    mu = np.mean(w, dtype=np.float64)
    sigma = np.std(w, dtype=np.float64)  # no floor: the fit is scale-free
    top = np.abs(w).max()
    if sigma <= 2 * kquantile.CONSTANT_SPREAD * top:  # constant in float32: its own codebook
        np.testing.assert_allclose(levels, np.full(k, mu), rtol=1e-5, atol=1e-30)
        return
    expected = mu + sigma * ndtri((np.arange(k) + 0.5) / k)
    np.testing.assert_allclose(levels, expected, rtol=1e-4, atol=1e-4 * sigma + 1e-6)
    # u_q = clip((floor(u k) + 0.5) / k, 1/(2k), 1 - 1/(2k)) with u = Phi((w - mu) / sigma).
    u = ndtr((w.astype(np.float64) - mu) / sigma)
    expected_bins = np.clip(np.floor(u * k), 0, k - 1)
    near_edge = np.abs(u * k - np.round(u * k)) < 1e-4  # float32 vs float64 on a bin edge
    assert np.all((indices == expected_bins) | near_edge)


@FAST
@given(bits=st.integers(1, 5), n=st.integers(1, 20))
def test_empirical_quantizer_splits_distinct_weights_into_equal_bins(bits, n):
    k = 2**bits
    w = np.random.default_rng(n).permutation(k * n).astype(np.float32)
    _, indices = kquantile.codebook(w, bits, distribution="empirical")
    assert np.array_equal(np.bincount(indices, minlength=k), np.full(k, n))


def test_constant_tensor_does_not_divide_by_zero():
    q = kquantile.quantize(np.full(10, 0.5, np.float32), 4).numpy()
    assert np.all(np.isfinite(q)) and np.allclose(q, 0.5, atol=1e-4)


def test_sixteen_bits_has_65536_levels():
    levels, _ = kquantile.codebook(np.random.default_rng(0).normal(size=1000).astype("f4"), 16)
    assert levels.shape == (65536,) and np.all(np.diff(levels) >= 0)


def _noise_statistics(noise: str, bits: int, n: int = 400_000):
    """Standard normal weights: (noisy std, noisy MSE to w, hard std, hard MSE, noisy, hard, w)."""
    w = tf.random.stateless_normal([1, n], seed=[bits, 7], dtype=tf.float64)
    tf.random.set_seed(bits)
    hard = kquantile.quantize(w, bits).numpy()
    noisy = kquantile.add_noise(w, bits, noise=noise).numpy()
    w = w.numpy()
    return (noisy.std(), np.mean((noisy - w) ** 2), hard.std(), np.mean((hard - w) ** 2),
            noisy, hard, w)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_paper_noise_is_three_times_the_quantizers_error_and_overshoots(bits):
    std, mse, hard_std, hard_mse, noisy, _, _ = _noise_statistics(kquantile.PAPER, bits)
    # docs/method.md section 9: 0.47 vs 0.147 at 2 bits; the noisy tensor is wider than w.
    assert 2.8 < mse / hard_mse < 3.5
    assert std > 1.05 > hard_std
    outer = kquantile.standard_levels(bits)[-1]
    assert np.mean(np.abs(noisy) > outer) == pytest.approx(1 / 2**bits, rel=0.1)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_clipped_noise_matches_the_quantizers_error_and_stays_inside_the_codebook(bits):
    std, mse, hard_std, hard_mse, noisy, hard, _ = _noise_statistics(kquantile.CLIPPED, bits)
    assert mse == pytest.approx(hard_mse, rel=0.03)
    assert 0.9 * hard_std < std <= hard_std
    assert np.abs(noisy).max() <= np.abs(hard).max() + 1e-9
    assert np.mean((noisy - hard) ** 2) < 0.6 * hard_mse


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_bin_matched_noise_matches_the_quantizers_error_in_every_bin(bits):
    std, mse, hard_std, hard_mse, noisy, hard, w = _noise_statistics(kquantile.BIN_MATCHED, bits)
    assert mse == pytest.approx(hard_mse, rel=0.03)
    for level in np.unique(hard):
        in_bin = hard == level
        assert np.mean((noisy[in_bin] - w[in_bin]) ** 2) == pytest.approx(
            np.mean((hard[in_bin] - w[in_bin]) ** 2), rel=0.08
        )
    # Wider than the codebook (the noise is additive), narrower than independent noise would be.
    assert hard_std + 0.02 < std < np.sqrt(1.0 + hard_mse)


def test_unknown_noise_model_is_rejected_by_name():
    with pytest.raises(ValueError, match="noise must be one of"):
        kquantile.add_noise(tf.ones([4, 4]), 2, noise="gaussian")


def test_quantize_model_gives_every_kernel_the_chosen_noise_and_checks_it():
    import uniq_tf
    from uniq_tf._keras import keras
    from uniq_tf.integration.inspection import kernel_wrappers, weight_quantizers

    inp = keras.Input((6,))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(8)(inp)))
    quantized = uniq_tf.quantize_model(model, 2, 8, noise=kquantile.CLIPPED)
    noises = [q.noise for w in kernel_wrappers(quantized) for _, q, _ in weight_quantizers(w)]
    assert noises == [kquantile.CLIPPED] * 2
    assert weight_quantizers(kernel_wrappers(quantized)[0])[0][1].get_config()["noise"] == "clipped"
    with pytest.raises(ValueError, match="noise must be one of"):
        uniq_tf.quantize_model(model, 2, 8, noise="wide")
