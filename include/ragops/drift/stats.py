"""Two-sample drift statistics, calibrated by permutation.

Every p-value here comes from a permutation test that applies the *same* procedure (kernel
bandwidth, fold split, classifier) to relabelled data, so under "no drift" it is valid at any
significance level: p = (1 + #{null >= observed}) / (1 + permutations). Pure numpy, scipy and
scikit-learn; no state store, no Airflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragops.errors import DriftError

MAX_BANDWIDTH_ROWS = 1000  # rows used by the median heuristic (it is a scale, not a statistic)
PERMUTATION_BLOCK = 64
FLOAT64_ROWS = 6000  # pooled sample size up to which the MMD kernel matrix is float64 (288 MB at the limit)  # label columns per matrix product (bounds memory at large samples)


def as_matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0:
        raise DriftError(f"{name}: expected a non-empty 2-D array of vectors, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DriftError(f"{name}: contains NaN or infinite values; the vectors are damaged (rebuild the index "
                         "with `ragops index rebuild --force`)")
    return a


def _pair(x: Any, y: Any, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    X, Y = as_matrix(x, "reference"), as_matrix(y, "current")
    if X.shape[1] != Y.shape[1]:
        raise DriftError(f"reference vectors have {X.shape[1]} dimensions and current ones {Y.shape[1]}: they come "
                         "from different embedding models; take a new reference snapshot")
    if len(X) < minimum or len(Y) < minimum:
        raise DriftError(f"too few vectors for a two-sample test: {len(X)} reference, {len(Y)} current "
                         f"(at least {minimum} each)")
    return X, Y


def p_value(observed: float, null: np.ndarray) -> float:
    """Permutation p-value, never 0: (1 + #{null >= observed}) / (1 + len(null))."""
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + len(null)))


def _labels(n: int, m: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Column 0: the real split (first n rows = reference); columns 1..P: random relabellings."""
    base = np.zeros(n + m, dtype=bool)
    base[:n] = True
    cols = [base] + [rng.permutation(base) for _ in range(permutations)]
    return np.stack(cols, axis=1)


def median_gamma(Z: np.ndarray, rng: np.random.Generator) -> float:
    """RBF width by the median heuristic on the pooled sample: gamma = 1 / median squared distance."""
    rows = Z if len(Z) <= MAX_BANDWIDTH_ROWS else Z[rng.choice(len(Z), MAX_BANDWIDTH_ROWS, replace=False)]
    d2 = sq_distances(rows.astype(np.float64))
    med = float(np.median(d2[np.triu_indices(len(rows), k=1)]))
    return 1.0 / med if med > 0 else 1.0


def sq_distances(Z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", Z, Z)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Z @ Z.T), 0.0)


def rbf_kernel(Z: np.ndarray, gamma: float) -> np.ndarray:
    K = sq_distances(Z)
    K *= -gamma
    np.exp(K, out=K)
    return K


def mmd_test(x: Any, y: Any, *, permutations: int = 200, seed: int = 0, gamma: float | None = None) -> dict[str, Any]:
    """Unbiased MMD² with an RBF kernel (median-heuristic width on the pooled sample) and its
    permutation p-value. All relabellings share one kernel matrix: a^T K a for every label column
    comes from one matrix product, so 200 permutations cost about as much as one pass."""
    X, Y = _pair(x, y)
    rng = np.random.default_rng(seed)
    n, m = len(X), len(Y)
    # float64 while the kernel matrix is small (exact ties between mirrored splits stay ties);
    # float32 above, where it would not fit comfortably (error ~1e-9, far below the null's spread)
    Z = np.vstack([X, Y]).astype(np.float64 if n + m <= FLOAT64_ROWS else np.float32)
    g = float(gamma) if gamma else median_gamma(Z, rng)
    K = rbf_kernel(Z, g)
    row = K.sum(axis=1, dtype=np.float64)
    total = float(row.sum())
    diag = np.diag(K).astype(np.float64)
    labels = _labels(n, m, permutations, rng)
    stats = np.empty(labels.shape[1])
    for start in range(0, labels.shape[1], PERMUTATION_BLOCK):
        A = labels[:, start:start + PERMUTATION_BLOCK].astype(K.dtype)
        KA = K @ A
        sxx = np.einsum("ij,ij->j", A, KA, dtype=np.float64)  # a^T K a (diagonal included)
        sxy = A.T.astype(np.float64) @ row - sxx  # a^T K b
        syy = total - 2.0 * sxy - sxx
        dx = A.T.astype(np.float64) @ diag
        dy = diag.sum() - dx
        stats[start:start + A.shape[1]] = ((sxx - dx) / (n * (n - 1)) + (syy - dy) / (m * (m - 1))
                                           - 2.0 * sxy / (n * m))
    observed, null = float(stats[0]), stats[1:]
    return {"method": "mmd", "statistic": observed, "p_value": p_value(observed, null), "gamma": g,
            "null_q95": float(np.quantile(null, 0.95)), "null": null.tolist(), "n_reference": n, "n_current": m,
            "permutations": permutations, "seed": seed}


def auc_columns(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of every column (Mann-Whitney: ties count half), positives = True."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    pos = labels.sum(axis=0)
    neg = labels.shape[0] - pos
    rank_sum = (ranks * labels).sum(axis=0)
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def classifier_test(x: Any, y: Any, *, permutations: int = 200, seed: int = 0, folds: int = 5, alpha: float = 0.05,
                    ridge_alpha: float = 1.0) -> dict[str, Any]:
    """Domain classifier: can a linear model tell current from reference vectors? Its cross-
    validated ROC AUC (out-of-fold scores of scikit-learn's ridge classifier, fitted for every
    relabelling at once as a multi-output ridge) is compared with the same AUC under random labels:
    the breach threshold is the null's (1 - alpha) quantile, not a fixed 0.55. The fold split is
    drawn without looking at the labels, so the real split and the relabellings are treated alike.

    Also returns each current vector's out-of-fold score ("how current-like"): the most current-like
    vectors mark the region that drifted."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    X, Y = _pair(x, y, minimum=2 * folds)
    rng = np.random.default_rng(seed)
    n, m = len(X), len(Y)
    Z = np.vstack([X, Y]).astype(np.float64)
    current = ~_labels(n, m, permutations, rng)  # True = current (the positive class)
    targets = np.where(current, 1.0, -1.0)
    scores = np.empty(current.shape)
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(Z):
        model = Ridge(alpha=ridge_alpha).fit(Z[train], targets[train])
        scores[test] = model.predict(Z[test])
    aucs = auc_columns(current, scores)
    observed, null = float(aucs[0]), aucs[1:]
    threshold = float(np.quantile(null, 1 - alpha))
    return {"method": "classifier", "statistic": observed, "auc": observed, "threshold": threshold,
            "p_value": p_value(observed, null), "null": null.tolist(), "folds": folds, "alpha": alpha,
            "n_reference": n, "n_current": m, "permutations": permutations, "seed": seed,
            "current_scores": scores[n:, 0].tolist()}


def centroid_test(x: Any, y: Any, *, permutations: int = 200, seed: int = 0) -> dict[str, Any]:
    """Cosine distance between the two centroids, with a permutation p-value."""
    X, Y = _pair(x, y)
    rng = np.random.default_rng(seed)
    n, m = len(X), len(Y)
    Z = np.vstack([X, Y]).astype(np.float64)
    labels = _labels(n, m, permutations, rng).astype(np.float64)
    sums = labels.T @ Z
    mx = sums / n
    my = (Z.sum(axis=0)[None, :] - sums) / m
    cos = (mx * my).sum(1) / np.maximum(np.linalg.norm(mx, axis=1) * np.linalg.norm(my, axis=1), 1e-12)
    dist = 1.0 - cos
    observed, null = float(dist[0]), dist[1:]
    return {"method": "centroid", "statistic": observed, "p_value": p_value(observed, null), "null": null.tolist(),
            "euclidean": float(np.linalg.norm(mx[0] - my[0])), "n_reference": n, "n_current": m,
            "permutations": permutations, "seed": seed}


TESTS = {"mmd": mmd_test, "classifier": classifier_test, "centroid": centroid_test}


def two_sample(x: Any, y: Any, methods: Sequence[str], *, alpha: float, permutations: int,
               seed: int) -> dict[str, Any]:
    """Run the chosen tests; each is judged at alpha / len(methods) (Bonferroni), so running three
    tests does not triple the false alarms. ``drifted`` = any test significant. Fewer permutations
    than 2 / level are raised to that, or no p-value could ever reach the level."""
    unknown = [m for m in methods if m not in TESTS]
    if unknown or not methods:
        raise DriftError(f"unknown drift method(s) {', '.join(unknown) or '(none)'}: use some of {', '.join(TESTS)}")
    level = alpha / len(methods)
    # the smallest p-value is 1 / (1 + permutations): make sure it can fall below the level
    needed = math.ceil(2 / level)
    out: dict[str, Any] = {"alpha": alpha, "level": level, "tests": {}, "permutations": max(permutations, needed)}
    for name in methods:
        kwargs: dict[str, Any] = {"permutations": out["permutations"], "seed": seed}
        if name == "classifier":
            kwargs["alpha"] = level
        r = TESTS[name](x, y, **kwargs)
        r["significant"] = r["p_value"] <= level
        out["tests"][name] = r
    out["drifted"] = any(r["significant"] for r in out["tests"].values())
    return out


# ----------------------------------------------------------------------------------------------
# scalar distributions


def psi(reference: Sequence[float], current: Sequence[float], bins: int = 10, eps: float = 1e-4) -> dict[str, Any]:
    """Population stability index over the reference's quantile bins (ties merged):
    sum((c - r) * ln(c / r)). Under 0.1 stable, 0.1-0.25 moderate, above 0.25 a major shift."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if len(r) == 0 or len(c) == 0:
        raise DriftError("PSI needs values on both sides")
    inner = np.unique(np.quantile(r, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    rp = np.histogram(r, edges)[0] / len(r)
    cp = np.histogram(c, edges)[0] / len(c)
    rp, cp = np.clip(rp, eps, None), np.clip(cp, eps, None)
    value = float(((cp - rp) * np.log(cp / rp)).sum())
    return {"psi": value, "edges": [float(e) for e in inner], "reference": rp.tolist(), "current": cp.tolist()}


def ks(reference: Sequence[float], current: Sequence[float]) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    res = ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64))
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue)}


def rate_rise(ref_hits: int, ref_total: int, cur_hits: int, cur_total: int) -> dict[str, Any]:
    """Has a rate (quarantined documents, negative feedback) risen? One-sided Fisher exact test."""
    from scipy.stats import fisher_exact

    ref = ref_hits / ref_total if ref_total else None
    cur = cur_hits / cur_total if cur_total else None
    if not ref_total or not cur_total:
        return {"reference": ref, "current": cur, "p_value": None}
    _, p = fisher_exact([[cur_hits, cur_total - cur_hits], [ref_hits, ref_total - ref_hits]], alternative="greater")
    return {"reference": ref, "current": cur, "p_value": float(p)}


# ----------------------------------------------------------------------------------------------
# metric series


def control_chart(values: Sequence[float], *, baseline_runs: int, window_runs: int, higher_is_better: bool = True,
                  min_sigma: float = 0.01, ewma_lambda: float = 0.3, limit_sigmas: float = 3.0,
                  run_length: int = 5) -> dict[str, Any]:
    """Control limits from the ``baseline_runs`` values before the newest ``window_runs`` ones.

    Rules, each looking only in the bad direction and only counting when it fires on the newest
    value (a decline alerts every night while it is newer than the baseline; once the baseline
    itself has slid, the limits follow it, so act on the first alerts):
    - ``shewhart``: the newest value is beyond centre -/+ 3 sigma (a sudden drop);
    - ``ewma``: the exponentially weighted mean of the window is beyond its limit
      centre -/+ 3 sigma sqrt(lambda / (2 - lambda)) (a slow slide every night passes alone);
    - ``run``: the newest ``run_length`` values are all worse than the centre by half a sigma.
    sigma is floored at ``min_sigma``: a deterministic evaluation has none."""
    v = [float(x) for x in values]
    if len(v) < window_runs + 3:
        return {"status": "insufficient history", "points": len(v), "needed": window_runs + 3}
    window = v[-window_runs:]
    baseline = v[:-window_runs][-baseline_runs:]
    centre = float(np.mean(baseline))
    sd = float(np.std(baseline, ddof=1)) if len(baseline) > 1 else 0.0
    sigma = max(sd, min_sigma)
    sign = -1.0 if higher_is_better else 1.0  # direction of "worse"
    lcl = centre + sign * limit_sigmas * sigma
    ewma_limit = centre + sign * limit_sigmas * sigma * math.sqrt(ewma_lambda / (2 - ewma_lambda))
    e = centre
    ewma = []
    for x in window:
        e = ewma_lambda * x + (1 - ewma_lambda) * e
        ewma.append(e)
    def worse(a: float, b: float) -> bool:
        return a < b if higher_is_better else a > b
    fired = []
    if worse(window[-1], lcl):
        fired.append("shewhart")
    if worse(ewma[-1], ewma_limit):
        fired.append("ewma")
    if len(window) >= run_length and all(worse(x, centre + sign * 0.5 * sigma) for x in window[-run_length:]):
        fired.append("run")
    return {"status": "breach" if fired else "ok", "rules": fired, "centre": centre, "sigma": sigma,
            "sd": sd, "limit": lcl, "ewma_limit": ewma_limit, "ewma": ewma, "window": window, "baseline": baseline,
            "latest": window[-1], "higher_is_better": higher_is_better}


# ----------------------------------------------------------------------------------------------
# knowledge gaps

STOP = frozenset("""a an and are as at be but by can do does for from how i if in into is it its me my of on or
our should so than that the their them then there these they this to was we what when where which who why will
with you your not no yes get use using vs""".split())


def cluster_texts(vectors: Any, texts: Sequence[str], *, distance: float = 0.55, top: int = 5,
                  examples: int = 3) -> list[dict[str, Any]]:
    """Group uncovered queries (average-linkage agglomerative clustering on cosine distance, no
    fixed k) and describe the largest groups: size, distinctive words, the queries closest to
    the group's centre."""
    import re
    from collections import Counter

    E = np.asarray(vectors, dtype=np.float64)
    if len(texts) == 0:
        return []
    if len(texts) == 1:
        labels = np.zeros(1, dtype=int)
    else:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                         distance_threshold=distance).fit_predict(E)
    words_all = Counter(w for t in texts for w in set(re.findall(r"[a-z][a-z0-9_-]{2,}", t.lower())) if w not in STOP)
    out = []
    for lab, size in Counter(labels.tolist()).most_common(top):
        idx = np.flatnonzero(labels == lab)
        centre = E[idx].mean(axis=0)
        norm = np.linalg.norm(E[idx], axis=1) * max(np.linalg.norm(centre), 1e-12)
        sims = (E[idx] @ centre) / np.maximum(norm, 1e-12)
        order, seen = [], set()
        for i in idx[np.argsort(-sims)]:  # nearest the centre first, each text once
            if texts[i] not in seen:
                seen.add(texts[i])
                order.append(int(i))
        words = Counter(w for i in idx for w in set(re.findall(r"[a-z][a-z0-9_-]{2,}", texts[i].lower()))
                        if w not in STOP)
        # distinctive: frequent here, relatively rarer elsewhere
        ranked = sorted(words, key=lambda w: (-(words[w] / len(idx)) * math.log((1 + len(texts)) / (1 + words_all[w]) + 1), w))
        out.append({"size": int(size), "terms": ranked[:5], "examples": [texts[i] for i in order[:examples]],
                    "members": [int(i) for i in idx]})
    return out
