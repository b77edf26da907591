"""The drift statistics in ``ragops.drift.stats`` checked against what they claim to be.

- Calibration: with both samples drawn from the same distribution, over many data and
  permutation seeds, each permutation test raises a false alarm at most about alpha of the time
  and its p-values are roughly uniform.
- Power: a mean shift or a new cluster of known size is detected; a small shift is detected more
  often than no shift.
- Independent computation on fixed data: MMD² by the textbook double sum, the classifier AUC by
  scikit-learn's ``cross_val_predict`` + Mann-Whitney U, the centroid distance by hand, the PSI of
  a two-bin example by hand, KS and Fisher by scipy.
- The control chart rules, the checks of ``two_sample`` and the query clustering.

No Airflow, no mocks: everything runs on small numpy arrays.
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import fisher_exact, ks_2samp, kstest, mannwhitneyu
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, cross_val_predict

from ragops.drift import stats as S
from ragops.errors import DriftError

METHODS = ("mmd", "classifier", "centroid")
ALPHA = 0.05
REPS = 200
N_REF, N_CUR, DIM = 60, 40, 8  # unbalanced on purpose
PERMS = 99
# one-sided 3-sigma allowance for the false-alarm rate estimated from REPS repetitions
FA_BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)


# ----------------------------------------------------------------------------------------------
# samplers (all take a Generator, a row count and the dimension)


def normal(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    return rng.standard_normal((n, d))


def mixture(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    """Bimodal and skewed: 70 % around -1, 30 % around +2.5 in the first two coordinates,
    exponential (not Gaussian) noise elsewhere."""
    centre = np.where(rng.random(n) < 0.7, -1.0, 2.5)
    out = rng.exponential(1.0, (n, d)) - 1.0
    out[:, :2] += centre[:, None]
    return out


def embeddings(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    """Unit vectors with a common positive direction, as sentence embeddings are."""
    v = rng.standard_normal((n, d)) + 0.6
    return v / np.linalg.norm(v, axis=1, keepdims=True)


SAMPLERS = {"normal": normal, "mixture": mixture, "embeddings": embeddings}


def run(method: str, x: np.ndarray, y: np.ndarray, *, seed: int, permutations: int = PERMS) -> dict:
    return S.TESTS[method](x, y, permutations=permutations, seed=seed)


@cache
def null_results(method: str, dist: str) -> tuple[np.ndarray, np.ndarray]:
    """p-values (and, for the classifier, "AUC above its threshold") over REPS repetitions with
    both samples from the same distribution; data seed and test seed change every time."""
    sample = SAMPLERS[dist]
    dist_id = list(SAMPLERS).index(dist)
    pvals, above = [], []
    for rep in range(REPS):
        rng = np.random.default_rng([dist_id, rep])
        x, y = sample(rng, N_REF), sample(rng, N_CUR)
        r = run(method, x, y, seed=7919 * rep + 13)
        pvals.append(r["p_value"])
        above.append(r["auc"] > r["threshold"] if method == "classifier" else r["p_value"] <= ALPHA)
    return np.asarray(pvals), np.asarray(above)


# ----------------------------------------------------------------------------------------------
# 1. calibration


@pytest.mark.parametrize("dist", list(SAMPLERS))
@pytest.mark.parametrize("method", METHODS)
def test_false_alarm_rate_is_nominal_under_no_drift(method: str, dist: str) -> None:
    pvals, above = null_results(method, dist)
    # p = (1 + #{null >= observed}) / (1 + permutations): on the grid k / 100, never 0
    assert pvals.min() >= 1 / (1 + PERMS) and pvals.max() <= 1.0
    rate = float(np.mean(pvals <= ALPHA))
    assert rate <= FA_BOUND, f"{method} on {dist}: false alarm rate {rate:.3f} > {FA_BOUND:.3f}"
    if method == "classifier":  # the reported breach threshold is calibrated the same way
        assert float(np.mean(above)) <= FA_BOUND
    # uniform enough: not piled up near 0 (liberal) nor near 1 (uselessly conservative)
    assert 0.4 <= float(pvals.mean()) <= 0.6, f"{method} on {dist}: mean p {pvals.mean():.3f}"
    assert kstest(pvals, "uniform").pvalue > 0.001
    # and not constant: the tests really look at the data
    assert len(np.unique(pvals)) > 20


# ----------------------------------------------------------------------------------------------
# 2. power


def alternating(d: int = DIM) -> np.ndarray:
    """A shift of 0.5 sd in every dimension, alternating in sign: orthogonal to the common
    direction of ``offset`` data (a shift along it would barely turn the centroid, and a cosine
    distance could not see it)."""
    return 0.5 * np.where(np.arange(d) % 2 == 0, 1.0, -1.0)


def offset(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    """Standard normal around (1, ..., 1): like raw embeddings, the vectors share a direction
    (around the origin a centroid's direction is pure noise and the cosine test is weak)."""
    return rng.standard_normal((n, d)) + 1.0


POWER_N = 100


@pytest.mark.parametrize("method", METHODS)
def test_mean_shift_is_detected(method: str) -> None:
    for rep in range(5):
        rng = np.random.default_rng([100, rep])
        x, y = offset(rng, POWER_N), offset(rng, POWER_N) + alternating()
        r = run(method, x, y, seed=rep, permutations=199)
        assert r["p_value"] <= 0.01, f"{method}: p = {r['p_value']} for a 0.5 sd shift (rep {rep})"
        assert r["statistic"] > np.quantile(r["null"], 0.99)


@pytest.mark.parametrize("method", METHODS)
def test_new_cluster_in_embeddings_is_detected(method: str) -> None:
    """40 % of the current vectors come from a topic the reference never had."""
    for rep in range(5):
        rng = np.random.default_rng([200, rep])
        x, y = embeddings(rng, POWER_N), embeddings(rng, POWER_N)
        k = int(0.4 * POWER_N)
        topic = np.zeros(DIM)
        topic[:2] = [3.0, -3.0]
        new = rng.standard_normal((k, DIM)) * 0.5 + topic
        y[:k] = new / np.linalg.norm(new, axis=1, keepdims=True)
        r = run(method, x, y, seed=rep, permutations=199)
        assert r["p_value"] <= 0.01, f"{method}: p = {r['p_value']} for a new cluster (rep {rep})"


@pytest.mark.parametrize("method", METHODS)
def test_small_shift_alarms_more_often_than_no_shift(method: str) -> None:
    """Paired: the same reference and current draws, with and without a 0.2 sd shift."""
    reps = 100
    hits_shift = hits_none = 0
    for rep in range(reps):
        rng = np.random.default_rng([300, rep])
        x, y = offset(rng, N_REF), offset(rng, N_CUR)
        hits_none += run(method, x, y, seed=rep)["p_value"] <= ALPHA
        hits_shift += run(method, x, y + 0.4 * alternating(), seed=rep)["p_value"] <= ALPHA
    rate, null_rate = hits_shift / reps, hits_none / reps
    assert null_rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert rate > null_rate + 0.1, f"{method}: 0.2 sd shift detected {rate:.2f} of the time, no shift {null_rate:.2f}"


# ----------------------------------------------------------------------------------------------
# 3a. MMD² against the textbook estimator


def mmd2_unbiased(X: np.ndarray, Y: np.ndarray, gamma: float) -> float:
    """Gretton et al. (2012), eq. 3, with explicit loops over pairs:
    1/(n(n-1)) sum_{i!=j} k(x_i,x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i,y_j) - 2/(nm) sum_{i,j} k(x_i,y_j)."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-gamma * sum((float(p) - float(q)) ** 2 for p, q in zip(a, b, strict=True)))

    n, m = len(X), len(Y)
    sxx = sum(k(X[i], X[j]) for i in range(n) for j in range(n) if i != j)
    syy = sum(k(Y[i], Y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(X[i], Y[j]) for i in range(n) for j in range(m))
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def f32(a: np.ndarray) -> np.ndarray:
    """The values the module actually sees (it stores vectors as float32)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def test_mmd_statistic_matches_textbook_double_sum() -> None:
    rng = np.random.default_rng(42)
    X, Y = rng.standard_normal((14, 5)), rng.standard_normal((17, 5)) + 1.0
    r = S.mmd_test(X, Y, permutations=19, seed=3)
    expected = mmd2_unbiased(f32(X), f32(Y), r["gamma"])
    assert expected > 0.05  # a real difference, so a relative tolerance is meaningful
    assert r["statistic"] == pytest.approx(expected, rel=1e-6)
    # an explicit gamma is used as given
    r = S.mmd_test(X, Y, permutations=19, seed=3, gamma=0.25)
    assert r["gamma"] == 0.25
    assert r["statistic"] == pytest.approx(mmd2_unbiased(f32(X), f32(Y), 0.25), rel=1e-6)


def test_mmd_statistic_near_zero_matches_to_float32_accuracy() -> None:
    """Same distribution: MMD² is a difference of nearly equal sums. The module's kernel matrix is
    float32, so agreement is to ~1e-8 absolute (kernel values are O(1)), not 1e-6 relative."""
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((15, 6)), rng.standard_normal((12, 6))
    r = S.mmd_test(X, Y, permutations=19, seed=1)
    expected = mmd2_unbiased(f32(X), f32(Y), r["gamma"])
    assert abs(r["statistic"]) < 0.1
    assert r["statistic"] == pytest.approx(expected, abs=1e-7)


def test_median_gamma_is_inverse_median_squared_distance() -> None:
    rng = np.random.default_rng(5)
    Z = rng.standard_normal((300, 8)) * 2.0 + 1.0
    expected = 1.0 / np.median(pdist(Z, "sqeuclidean"))
    assert S.median_gamma(Z, np.random.default_rng(0)) == pytest.approx(expected, rel=1e-9)
    # and mmd_test reports the heuristic on the pooled sample
    X, Y = Z[:120], Z[120:]
    r = S.mmd_test(X, Y, permutations=9, seed=0)
    assert r["gamma"] == pytest.approx(1.0 / np.median(pdist(f32(Z), "sqeuclidean")), rel=1e-6)
    # all points equal: no scale to take, falls back to 1
    assert S.median_gamma(np.ones((5, 3)), np.random.default_rng(0)) == 1.0


def all_splits(n: int, m: int) -> list[tuple[list[int], list[int]]]:
    idx = range(n + m)
    return [(list(a), [i for i in idx if i not in a]) for a in itertools.combinations(idx, n)]


def test_mmd_null_is_made_of_relabellings_and_p_value_matches_exact_test() -> None:
    """3 + 4 points have 35 splits: every null value must be the MMD² of one of them, and with
    many permutations the p-value approaches the exact permutation p-value. (n != m on purpose:
    with n == m a split and its mirror have the same MMD², a tie the float32 kernel may break
    either way, so the Monte Carlo p-value need not approach the tie-inclusive exact one.)"""
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((3, 2)), rng.standard_normal((4, 2)) + 1.0
    r = S.mmd_test(X, Y, permutations=1999, seed=4)
    Z = f32(np.vstack([X, Y]))
    split_stats = np.array([mmd2_unbiased(Z[a], Z[b], r["gamma"]) for a, b in all_splits(3, 4)])
    assert np.abs(split_stats[:, None] - split_stats[None, :])[~np.eye(35, dtype=bool)].min() > 1e-4  # no ties
    null = np.asarray(r["null"])
    assert np.abs(null[:, None] - split_stats[None, :]).min(axis=1).max() < 1e-6
    exact = float(np.mean(split_stats >= r["statistic"] - 1e-6))
    assert r["p_value"] == pytest.approx(exact, abs=0.03)


# ----------------------------------------------------------------------------------------------
# 3b. classifier AUC against scikit-learn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classifier_auc_matches_cross_val_predict(seed: int) -> None:
    rng = np.random.default_rng([400, seed])
    n, m = 45, 38
    X, Y = rng.standard_normal((n, DIM)), rng.standard_normal((m, DIM)) + 0.25
    r = S.classifier_test(X, Y, seed=seed, permutations=49)
    Z = np.vstack([f32(X), f32(Y)])
    y = np.array([0] * n + [1] * m)
    scores = cross_val_predict(RidgeClassifier(alpha=1.0), Z, y, cv=KFold(5, shuffle=True, random_state=seed),
                               method="decision_function")
    auc = mannwhitneyu(scores[n:], scores[:n]).statistic / (n * m)
    assert r["auc"] == pytest.approx(auc, abs=1e-9)
    assert r["statistic"] == r["auc"]
    assert np.allclose(r["current_scores"], scores[n:], atol=1e-9)
    assert r["auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-9)
    # threshold = (1 - alpha) quantile of the reported null
    assert r["threshold"] == pytest.approx(np.quantile(r["null"], 0.95), abs=1e-12)


def test_auc_columns_matches_roc_auc_score_with_ties() -> None:
    rng = np.random.default_rng(9)
    labels = np.zeros((30, 4), dtype=bool)
    for j in range(4):
        labels[rng.choice(30, 8 + 3 * j, replace=False), j] = True
    scores = rng.integers(0, 4, size=(30, 4)).astype(float)  # heavy ties
    scores[:, 3] = 1.0  # all tied: AUC 0.5
    got = S.auc_columns(labels, scores)
    want = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(4)]
    assert np.allclose(got, want, atol=1e-12)
    assert got[3] == 0.5


def test_classifier_needs_enough_vectors_for_its_folds() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DriftError, match="too few vectors"):
        S.classifier_test(rng.standard_normal((9, 3)), rng.standard_normal((20, 3)), permutations=9)


# ----------------------------------------------------------------------------------------------
# 3c. centroid distance by hand


def test_centroid_statistic_is_cosine_distance_of_means() -> None:
    rng = np.random.default_rng(21)
    X, Y = embeddings(rng, 30), embeddings(rng, 25)
    Y[:, 0] += 0.3
    r = S.centroid_test(X, Y, permutations=49, seed=2)
    mx, my = f32(X).mean(axis=0), f32(Y).mean(axis=0)
    cos = sum(a * b for a, b in zip(mx, my, strict=True)) / (math.sqrt(sum(a * a for a in mx))
                                                              * math.sqrt(sum(b * b for b in my)))
    assert r["statistic"] == pytest.approx(1.0 - cos, rel=1e-9)
    assert r["euclidean"] == pytest.approx(math.dist(mx, my), rel=1e-9)
    # the null is made of relabellings: each value is the distance for some split of the pool
    rng = np.random.default_rng(22)
    X, Y = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    r = S.centroid_test(X, Y, permutations=200, seed=0)
    Z = f32(np.vstack([X, Y]))

    def cosdist(a: np.ndarray, b: np.ndarray) -> float:
        u, v = a.mean(axis=0), b.mean(axis=0)
        return 1.0 - float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))

    split_stats = np.array([cosdist(Z[a], Z[b]) for a, b in all_splits(3, 3)])
    assert np.abs(np.asarray(r["null"])[:, None] - split_stats[None, :]).min(axis=1).max() < 1e-9


# ----------------------------------------------------------------------------------------------
# 4. PSI, KS, Fisher


def test_psi_of_identical_distributions_is_about_zero() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(5000)
    assert S.psi(a, a)["psi"] == pytest.approx(0.0, abs=1e-12)
    assert S.psi(a, rng.standard_normal(5000))["psi"] < 0.01
    assert S.psi(a, rng.standard_normal(5000) + 1.0)["psi"] > 0.25  # a major shift


def test_psi_two_bin_example_by_hand() -> None:
    # reference median 0.5 splits it 50/50; current is 25/75 -> 0.25 ln 2 + 0.25 ln 1.5
    r = S.psi([0, 0, 1, 1], [0, 1, 1, 1], bins=2)
    assert r["edges"] == [0.5]
    assert r["reference"] == [0.5, 0.5] and r["current"] == [0.25, 0.75]
    assert r["psi"] == pytest.approx((0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5),
                                     rel=1e-12)
    # an empty bin is floored at eps instead of giving infinity
    r = S.psi([0, 0, 1, 1], [1, 1, 1, 1], bins=2, eps=1e-4)
    assert r["psi"] == pytest.approx((1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2), rel=1e-12)


def test_psi_merges_tied_quantiles_and_rejects_empty() -> None:
    r = S.psi([1.0] * 50 + [2.0] * 50, [1.0] * 100, bins=10)
    assert r["edges"] == sorted(set(r["edges"]))
    assert len(r["reference"]) == len(r["edges"]) + 1
    assert sum(r["reference"]) == pytest.approx(1.0, abs=1e-3)  # empty bins are floored at eps
    with pytest.raises(DriftError):
        S.psi([], [1.0])


def test_ks_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(200), rng.standard_normal(150) + 0.5
    want = ks_2samp(a, b)
    got = S.ks(a.tolist(), b.tolist())
    assert got["statistic"] == pytest.approx(want.statistic, abs=1e-12)
    assert got["p_value"] == pytest.approx(want.pvalue, rel=1e-9)
    assert got["p_value"] < 0.05


def test_rate_rise_is_one_sided_fisher() -> None:
    r = S.rate_rise(5, 100, 20, 100)
    assert r["reference"] == 0.05 and r["current"] == 0.2
    assert r["p_value"] == pytest.approx(fisher_exact([[20, 80], [5, 95]], alternative="greater")[1], rel=1e-12)
    assert r["p_value"] < 0.01
    assert S.rate_rise(20, 100, 5, 100)["p_value"] > 0.9  # a fall is not a rise
    assert S.rate_rise(0, 0, 3, 10)["p_value"] is None


# ----------------------------------------------------------------------------------------------
# 5. control chart

BASELINE = [0.80 + 0.02 * e for e in (1, -1, 0, 0.5, -0.5, 1, -1, 0, 0.5, -0.5, 1, -1, 0, 0.5)]
CENTRE = float(np.mean(BASELINE))
SD = float(np.std(BASELINE, ddof=1))


def chart(window: list[float], **kw: object) -> dict:
    return S.control_chart(BASELINE + window, baseline_runs=len(BASELINE), window_runs=len(window), **kw)


def test_flat_series_passes() -> None:
    r = S.control_chart([0.8] * 21, baseline_runs=14, window_runs=7)
    assert r["status"] == "ok" and r["rules"] == []
    assert r["sigma"] == 0.01  # floored: a deterministic metric has no spread
    r = chart([CENTRE + 0.1 * SD * (-1) ** i for i in range(7)])  # noise around the centre
    assert r["status"] == "ok"


def test_slow_decline_is_caught_by_ewma_or_run_but_not_shewhart() -> None:
    window = [CENTRE - 0.35 * SD * (k + 1) for k in range(7)]
    series = BASELINE[-1:] + window
    # premise: every night is within 3 sigma of the previous one, and even the last is within 3 sigma
    assert all(abs(b - a) < 3 * SD for a, b in itertools.pairwise(series))
    assert window[-1] > CENTRE - 3 * SD
    r = chart(window)
    assert r["sigma"] == pytest.approx(SD)
    assert r["status"] == "breach"
    assert "shewhart" not in r["rules"]
    assert {"ewma", "run"} & set(r["rules"])
    assert r["rules"] == ["ewma", "run"]


def test_sudden_drop_fires_shewhart() -> None:
    r = chart([CENTRE] * 6 + [CENTRE - 5 * SD])
    assert r["status"] == "breach"
    assert "shewhart" in r["rules"] and "run" not in r["rules"]
    assert r["latest"] < r["limit"]


def test_lower_is_better_fires_on_a_rise_not_a_drop() -> None:
    latency = [100.0 + 2.0 * e for e in (1, -1, 0, 0.5, -0.5, 1, -1, 0, 0.5, -0.5)]
    sd = float(np.std(latency, ddof=1))
    centre = float(np.mean(latency))
    rise = [centre + 6 * sd] * 5
    drop = [centre - 6 * sd] * 5
    up = S.control_chart(latency + rise, baseline_runs=10, window_runs=5, higher_is_better=False)
    down = S.control_chart(latency + drop, baseline_runs=10, window_runs=5, higher_is_better=False)
    assert up["status"] == "breach" and set(up["rules"]) == {"shewhart", "ewma", "run"}
    assert up["limit"] > centre and up["ewma_limit"] > centre
    assert down["status"] == "ok" and down["rules"] == []
    # and the default direction is the opposite
    assert S.control_chart(latency + drop, baseline_runs=10, window_runs=5)["status"] == "breach"
    assert S.control_chart(latency + rise, baseline_runs=10, window_runs=5)["status"] == "ok"


def test_too_few_points_is_insufficient_history() -> None:
    r = S.control_chart([0.8] * 9, baseline_runs=14, window_runs=7)
    assert r == {"status": "insufficient history", "points": 9, "needed": 10}
    assert S.control_chart([0.8] * 10, baseline_runs=14, window_runs=7)["status"] == "ok"


# ----------------------------------------------------------------------------------------------
# 6. two_sample


def shifted_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return normal(rng, 50), normal(rng, 50) + alternating() * 2


def test_unknown_method_is_named_in_the_error() -> None:
    X, Y = shifted_pair()
    with pytest.raises(DriftError, match="bogus") as info:
        S.two_sample(X, Y, ["mmd", "bogus"], alpha=0.05, permutations=50, seed=0)
    assert "mmd" in str(info.value) and "classifier" in str(info.value)  # lists the valid ones
    with pytest.raises(DriftError, match="unknown drift method"):
        S.two_sample(X, Y, [], alpha=0.05, permutations=50, seed=0)


@pytest.mark.parametrize("methods", [["mmd"], ["mmd", "classifier", "centroid"]])
def test_permutations_are_raised_to_reach_the_level(methods: list[str]) -> None:
    X, Y = shifted_pair()
    out = S.two_sample(X, Y, methods, alpha=0.05, permutations=10, seed=0)
    assert out["level"] == pytest.approx(0.05 / len(methods))
    assert out["permutations"] > 10
    assert 1 / (1 + out["permutations"]) <= out["level"]
    for name in methods:
        r = out["tests"][name]
        assert r["permutations"] == out["permutations"] == len(r["null"])
        assert r["significant"] is True  # a 1 sd shift: reachable only because permutations were raised
        assert r["p_value"] <= out["level"]
    assert out["drifted"] is True
    if "classifier" in methods:
        assert out["tests"]["classifier"]["alpha"] == out["level"]  # threshold at the Bonferroni level
    # enough permutations already: left alone
    assert S.two_sample(X, Y, ["centroid"], alpha=0.05, permutations=500, seed=0)["permutations"] == 500


def test_two_sample_no_drift_is_not_drifted() -> None:
    rng = np.random.default_rng(99)
    out = S.two_sample(normal(rng, 50), normal(rng, 50), list(METHODS), alpha=0.05, permutations=200, seed=1)
    assert out["drifted"] is False
    assert all(r["significant"] is False for r in out["tests"].values())


def test_mismatched_dimensions_blame_embedding_models() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DriftError, match="embedding models"):
        S.two_sample(rng.standard_normal((20, 8)), rng.standard_normal((20, 6)), ["mmd"], alpha=0.05,
                     permutations=50, seed=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("method", METHODS)
def test_nan_or_inf_input_raises(method: str, bad: float) -> None:
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((20, 4)), rng.standard_normal((20, 4))
    Y[3, 1] = bad
    with pytest.raises(DriftError, match="NaN or infinite"):
        S.two_sample(X, Y, [method], alpha=0.05, permutations=50, seed=0)


def test_malformed_input_raises() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DriftError, match="2-D"):
        S.mmd_test(rng.standard_normal(10), rng.standard_normal((10, 1)))
    with pytest.raises(DriftError, match="non-empty"):
        S.mmd_test(np.empty((0, 3)), rng.standard_normal((10, 3)))
    with pytest.raises(DriftError, match="too few vectors"):
        S.centroid_test(rng.standard_normal((1, 3)), rng.standard_normal((10, 3)))


def test_same_seed_same_result() -> None:
    X, Y = shifted_pair(3)
    for method in METHODS:
        a, b = run(method, X, Y, seed=5), run(method, X, Y, seed=5)
        assert a["p_value"] == b["p_value"] and a["null"] == b["null"]


# ----------------------------------------------------------------------------------------------
# 7. cluster_texts


def test_cluster_texts_finds_two_groups() -> None:
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0, 0.0, 0.0]) + rng.normal(0, 0.03, (6, 4))
    b = np.array([0.0, 0.0, 1.0, 0.0]) + rng.normal(0, 0.03, (4, 4))
    a[1] = a[0] = np.array([1.0, 0.0, 0.0, 0.0])  # a repeated query, right at the centre
    texts_a = ["reset my password account", "reset my password account", "how do I reset the password",
               "password reset link expired", "cannot reset password", "reset password for the account"]
    texts_b = ["invoice billing refund", "refund for a billing error", "billing invoice missing",
               "where is my invoice for billing"]
    vectors = np.vstack([a, b])
    out = S.cluster_texts(vectors, texts_a + texts_b, examples=3)
    assert [c["size"] for c in out] == [6, 4]
    assert sorted(out[0]["members"]) == list(range(6))
    assert sorted(out[1]["members"]) == list(range(6, 10))
    ex = out[0]["examples"]
    assert len(ex) == 3 and len(set(ex)) == 3  # the repeated query appears once
    assert ex[0] == "reset my password account"  # nearest the centre first
    assert set(ex) <= set(texts_a) and set(out[1]["examples"]) <= set(texts_b)
    words_a = {w for t in texts_a for w in t.lower().split()}
    words_b = {w for t in texts_b for w in t.lower().split()}
    assert set(out[0]["terms"]) <= words_a and set(out[1]["terms"]) <= words_b
    assert set(out[0]["terms"][:2]) == {"password", "reset"}  # in every query of the group
    assert out[1]["terms"][0] == "billing"
    assert not (set(out[0]["terms"]) | set(out[1]["terms"])) & S.STOP
    # top limits the number of groups described
    assert len(S.cluster_texts(vectors, texts_a + texts_b, top=1)) == 1


def test_cluster_texts_edge_cases() -> None:
    assert S.cluster_texts(np.empty((0, 3)), []) == []
    one = S.cluster_texts(np.array([[1.0, 0.0]]), ["only question here"])
    assert len(one) == 1
    assert one[0]["size"] == 1 and one[0]["members"] == [0]
    assert one[0]["examples"] == ["only question here"]
    assert set(one[0]["terms"]) == {"only", "question", "here"}
