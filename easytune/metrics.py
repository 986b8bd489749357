"""Evaluation metrics: pure functions on embeddings and joints, no models and no I/O.

Conventions (Guo et al. 2022, "Generating Diverse and Natural 3D Human Motions from Text"):
- Embeddings are arrays (N, D) from the evaluator; text i belongs with motion i.
- R-Precision uses batches of 32 pairs (1 true + 31 others) and Euclidean distance. Labels repeat
  in this project's dataset, so `distinct_label_batches` builds every batch from 32 distinct
  (content, style) labels: a paraphrase of the same label among the 31 "others" would be a correct
  match scored as a miss.
- Every replicated metric is summarised by `mean_ci`: mean and the half-width of a 95% Student-t
  confidence interval (Guo's code uses 1.96 * std / sqrt(N), too narrow for N = 5).
- Joints are (T, 22, 3) in metres, y up, HumanML3D joint order, `fps` frames per second.

Bad input raises `UserError` (empty sets, NaN, too few distinct labels), never a silent number.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
from scipy import stats

from easytune.errors import UserError
from easytune.motion.skeleton import FOOT_LEFT, FOOT_RIGHT

R_PRECISION_BATCH = 32
DIVERSITY_PAIRS = 300
MULTIMODALITY_PAIRS = 10
FOOT_JOINTS = tuple(FOOT_LEFT + FOOT_RIGHT)  # ankles and toes, HumanML3D joint order


def _as_array(x, name: str, ndim: int | None = None) -> np.ndarray:
    """float64 numpy copy of a numpy array or torch tensor, checked for shape and finiteness."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise UserError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise UserError(f"{name} is empty; at least one sample is needed")
    if not np.all(np.isfinite(a)):
        raise UserError(f"{name} contains NaN or infinite values; check the model or the motions fed to it")
    return a


# --- confidence intervals ----------------------------------------------------------------------

def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t confidence interval) over replications.

    With one value the half-width is NaN (no spread can be estimated), shown as "n/a" in tables.
    """
    v = _as_array(list(values), "replicated values", ndim=1)
    n = len(v)
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan")
    t = stats.t.ppf(0.5 + confidence / 2, df=n - 1)
    return mean, float(t * v.std(ddof=1) / np.sqrt(n))


# --- distances -----------------------------------------------------------------------------------

def euclidean_distance_matrix(a, b) -> np.ndarray:
    """(N, M) pairwise Euclidean distances between rows of a (N, D) and b (M, D)."""
    a = _as_array(a, "first embeddings", 2)
    b = _as_array(b, "second embeddings", 2)
    sq = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def cosine_similarity_matrix(a, b) -> np.ndarray:
    """(N, M) cosine similarities between rows of a (N, D) and b (M, D)."""
    a = _as_array(a, "first embeddings", 2)
    b = _as_array(b, "second embeddings", 2)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


# --- batches of distinct labels --------------------------------------------------------------------

def distinct_label_batches(labels: Sequence[Hashable] | None, n: int, batch_size: int = R_PRECISION_BATCH,
                           seed: int = 0) -> list[np.ndarray]:
    """Index batches of `batch_size` samples, each with `batch_size` distinct labels.

    Greedy: each batch takes one sample from each of the `batch_size` labels with the most samples
    left (ties broken at random), which uses as many samples as possible; samples left over when
    fewer than `batch_size` labels remain are not used. With `labels=None` the samples are shuffled
    and cut into batches (Guo's protocol; remainder dropped).
    """
    rng = np.random.default_rng(seed)
    if n < batch_size:
        raise UserError(f"R-Precision needs at least {batch_size} samples per batch, got {n} samples")
    if labels is None:
        order = rng.permutation(n)
        return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    if len(labels) != n:
        raise UserError(f"got {len(labels)} labels for {n} samples; give one label per sample")
    buckets: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        buckets.setdefault(lab if not isinstance(lab, list) else tuple(lab), []).append(i)
    if len(buckets) < batch_size:
        raise UserError(f"R-Precision batches need {batch_size} distinct labels, but the set has only "
                        f"{len(buckets)}; use a larger set or a smaller batch size")
    pools = [list(rng.permutation(v)) for v in buckets.values()]
    batches = []
    while True:
        sizes = np.array([len(p) for p in pools])
        if (sizes > 0).sum() < batch_size:
            break
        # sort by remaining size (descending), random tie-break
        order = np.lexsort((rng.random(len(pools)), -sizes))[:batch_size]
        batch = np.array([pools[j].pop() for j in order])
        batches.append(rng.permutation(batch))
    return batches


# --- retrieval ---------------------------------------------------------------------------------

def _true_rank(score_rows: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Rank (0 = first) of the diagonal entry in each row; ties count against the true match."""
    true = np.diagonal(score_rows)[:, None]
    if higher_is_better:
        beaten = (score_rows > true).sum(1) + ((score_rows == true).sum(1) - 1)
    else:
        beaten = (score_rows < true).sum(1) + ((score_rows == true).sum(1) - 1)
    return beaten


def r_precision(text_emb, motion_emb, labels: Sequence[Hashable] | None = None, top_k: int = 3,
                batch_size: int = R_PRECISION_BATCH, seed: int = 0) -> np.ndarray:
    """Guo's R-Precision: (top_k,) fraction of texts whose motion is within the k nearest (Euclidean)
    among the `batch_size` motions of its batch, for k = 1..top_k; batches from `distinct_label_batches`.

    Ties count against the true motion: texts equal to their own distinct motions give 1.0, a
    collapsed model (all embeddings equal) gives 0.0.
    """
    t = _as_array(text_emb, "text embeddings", 2)
    m = _as_array(motion_emb, "motion embeddings", 2)
    if t.shape != m.shape:
        raise UserError(f"text and motion embeddings must have the same shape, got {t.shape} and {m.shape}")
    hits = np.zeros(top_k)
    count = 0
    for idx in distinct_label_batches(labels, len(t), batch_size, seed):
        rank = _true_rank(euclidean_distance_matrix(t[idx], m[idx]), higher_is_better=False)
        hits += np.array([(rank < k).sum() for k in range(1, top_k + 1)])
        count += len(idx)
    return hits / count


def retrieval_recall(sim, ks: Sequence[int] = (1, 2, 3, 5, 10)) -> dict[str, float]:
    """Recall@k from a square similarity matrix (texts x motions, truth on the diagonal):
    {"t2m_R@k": ..., "m2t_R@k": ...} in percent. Ties count against the truth."""
    s = _as_array(sim, "similarity matrix", 2)
    if s.shape[0] != s.shape[1]:
        raise UserError(f"similarity matrix must be square (pairs on the diagonal), got {s.shape}")
    out = {}
    for name, rows in (("t2m", s), ("m2t", s.T)):
        rank = _true_rank(rows, higher_is_better=True)
        for k in ks:
            out[f"{name}_R@{k}"] = float(100.0 * (rank < k).mean())
    return out


def small_batch_retrieval(text_emb, motion_emb, labels: Sequence[Hashable] | None,
                          ks: Sequence[int] = (1, 2, 3, 5, 10), batch_size: int = R_PRECISION_BATCH,
                          seed: int = 0) -> dict[str, float]:
    """TMR's small-batch protocol: recall@k (cosine) averaged over batches of `batch_size`
    distinct-label pairs; one value per key, in percent."""
    t = _as_array(text_emb, "text embeddings", 2)
    m = _as_array(motion_emb, "motion embeddings", 2)
    batches = distinct_label_batches(labels, len(t), batch_size, seed)
    rows = [retrieval_recall(cosine_similarity_matrix(t[i], m[i]), ks) for i in batches]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


# --- distribution metrics ---------------------------------------------------------------------------

def activation_statistics(emb) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of embeddings (N, D), N >= 2."""
    a = _as_array(emb, "embeddings", 2)
    if len(a) < 2:
        raise UserError(f"FID needs at least 2 samples per set, got {len(a)}")
    return a.mean(0), np.cov(a, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), the Frechet distance of two Gaussians.

    The symmetric form has the same trace as Tr((S1 S2)^1/2) and is computed with eigh, which stays
    exact for singular covariances (N <= D) where the usual sqrtm needs an epsilon ridge.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise UserError(f"FID statistics differ in size: {mu1.shape} vs {mu2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid(emb_a, emb_b) -> float:
    """Frechet distance between the Gaussians fitted to two embedding sets (N, D) and (M, D)."""
    return frechet_distance(*activation_statistics(emb_a), *activation_statistics(emb_b))


def mm_dist(text_emb, motion_emb) -> float:
    """Mean Euclidean distance between each text embedding and its own motion's embedding."""
    t = _as_array(text_emb, "text embeddings", 2)
    m = _as_array(motion_emb, "motion embeddings", 2)
    if t.shape != m.shape:
        raise UserError(f"text and motion embeddings must have the same shape, got {t.shape} and {m.shape}")
    return float(np.linalg.norm(t - m, axis=1).mean())


def diversity(emb, n_pairs: int = DIVERSITY_PAIRS, seed: int = 0) -> float:
    """Mean distance between random pairs of embeddings (N, D).

    N >= n_pairs: Guo's protocol, two independent draws of n_pairs indices without replacement.
    N < n_pairs: documented fallback, N // 2 disjoint pairs from one random permutation.
    """
    a = _as_array(emb, "embeddings", 2)
    n = len(a)
    if n < 2:
        raise UserError(f"Diversity needs at least 2 samples, got {n}")
    rng = np.random.default_rng(seed)
    if n >= n_pairs:
        first, second = rng.choice(n, n_pairs, replace=False), rng.choice(n, n_pairs, replace=False)
    else:
        perm = rng.permutation(n)
        half = n // 2
        first, second = perm[:half], perm[half:2 * half]
    return float(np.linalg.norm(a[first] - a[second], axis=1).mean())


def multimodality(emb, n_pairs: int = MULTIMODALITY_PAIRS, seed: int = 0) -> float:
    """Mean distance between pairs of motions generated for the same text.

    emb: (n_texts, n_repeats, D); per text, two independent draws of n_pairs repeats (Guo).
    """
    a = _as_array(emb, "multimodality embeddings", 3)
    n_texts, n_rep, _ = a.shape
    if n_rep < n_pairs:
        raise UserError(f"MultiModality with {n_pairs} pairs needs at least {n_pairs} motions per text, "
                        f"got {n_rep}; generate more repeats or lower the pair count")
    rng = np.random.default_rng(seed)
    first = np.stack([rng.choice(n_rep, n_pairs, replace=False) for _ in range(n_texts)])
    second = np.stack([rng.choice(n_rep, n_pairs, replace=False) for _ in range(n_texts)])
    rows = np.arange(n_texts)[:, None]
    return float(np.linalg.norm(a[rows, first] - a[rows, second], axis=-1).mean())


# --- physical plausibility on joints (T, 22, 3), metres, y up ---------------------------------------

def _joints(j) -> np.ndarray:
    a = _as_array(j, "joints", 3)
    if a.shape[2] != 3 or a.shape[1] <= max(FOOT_JOINTS):
        raise UserError(f"joints must have shape (frames, 22, 3), got {a.shape}")
    return a


def foot_skating_ratio(joints, fps: float = 20.0, height: float = 0.05, speed: float = 0.5,
                       feet: Sequence[int] = FOOT_JOINTS) -> float:
    """Fraction of foot contacts that slide: a foot joint is in contact between frames t and t+1 when
    it is below `height` metres in both; it slides when its horizontal (x, z) speed exceeds `speed`
    m/s. Returns 0.0 when no foot ever touches the floor."""
    j = _joints(joints)
    if len(j) < 2:
        raise UserError("foot skating needs at least 2 frames")
    f = j[:, list(feet)]                                   # (T, F, 3)
    contact = (f[:-1, :, 1] < height) & (f[1:, :, 1] < height)
    hspeed = np.linalg.norm(f[1:, :, [0, 2]] - f[:-1, :, [0, 2]], axis=-1) * fps
    if contact.sum() == 0:
        return 0.0
    return float((contact & (hspeed > speed)).sum() / contact.sum())


def floor_penetration(joints, floor: float = 0.0, feet: Sequence[int] = FOOT_JOINTS) -> float:
    """Mean over frames of how far (metres) the lowest foot joint is below the floor (0 if above)."""
    j = _joints(joints)
    lowest = j[:, list(feet), 1].min(1)
    return float(np.maximum(floor - lowest, 0.0).mean())


def jerk(joints, fps: float = 20.0) -> float:
    """Mean magnitude of the third time derivative of joint positions (m/s^3), by finite differences."""
    j = _joints(joints)
    if len(j) < 4:
        raise UserError(f"jerk needs at least 4 frames, got {len(j)}")
    d3 = np.diff(j, n=3, axis=0) * fps ** 3
    return float(np.linalg.norm(d3, axis=-1).mean())


def physical_metrics(joints, fps: float = 20.0) -> dict[str, float]:
    """The three plausibility numbers for one motion (T, 22, 3)."""
    return {"foot_skating": foot_skating_ratio(joints, fps), "floor_penetration": floor_penetration(joints),
            "jerk": jerk(joints, fps)}
