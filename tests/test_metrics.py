import numpy as np
import pytest
from scipy import linalg

from easytune import metrics
from easytune.errors import UserError


def test_mean_ci_uses_student_t():
    mean, half = metrics.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    # t_{0.975, 4} = 2.7764451; std(ddof=1) = sqrt(2.5)
    assert mean == 3.0
    assert half == pytest.approx(2.7764451 * np.sqrt(2.5) / np.sqrt(5), rel=1e-6)
    m1, h1 = metrics.mean_ci([7.0])
    assert m1 == 7.0 and np.isnan(h1)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_closed_form_for_gaussians():
    # commuting (diagonal) covariances: |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # general SPD pair: the symmetric form Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = A @ A.T + np.eye(4), B @ B.T + np.eye(4)
    r1 = linalg.sqrtm(s1).real
    sym = np.trace(s1 + s2 - 2 * linalg.sqrtm(r1 @ s2 @ r1).real)
    assert metrics.frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(sym, rel=1e-7)


def test_fid_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, size=(20000, 2))
    y = rng.normal(0.5, 2.0, size=(20000, 2))
    # 2 * 0.25 + 2 * (1 - 2)^2 = 2.5
    assert metrics.fid(x, y) == pytest.approx(2.5, rel=0.03)


def test_r_precision_identical_embeddings_is_one_and_collapsed_is_zero():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(96, 16))
    np.testing.assert_allclose(metrics.r_precision(e, e), [1.0, 1.0, 1.0])
    same = np.ones((64, 4))
    np.testing.assert_allclose(metrics.r_precision(same, same), [0.0, 0.0, 0.0])


def test_r_precision_hand_built_ranks():
    # 1-d embeddings: texts at 0..31, motion i at i except motions 0/1 moved to 0.6/0.4, so texts 0
    # and 1 each find the other's motion first and their own second
    t = np.arange(32, dtype=float)[:, None]
    m = t.copy()
    m[0], m[1] = 0.6, 0.4
    top = metrics.r_precision(t, m, top_k=3)
    np.testing.assert_allclose(top, [30 / 32, 1.0, 1.0])


def test_distinct_label_batches_never_repeat_a_label():
    labels = [(i % 40, 0) for i in range(200)]  # 40 labels x 5 samples
    batches = metrics.distinct_label_batches(labels, 200, 32, seed=3)
    assert len(batches) == 6  # greedy: 5 full rounds of 40 -> 200 samples / 32 = 6 batches
    for b in batches:
        assert len({labels[i] for i in b}) == 32
    used = np.concatenate(batches)
    assert len(set(used.tolist())) == len(used)


def test_r_precision_rejects_too_few_labels():
    e = np.zeros((64, 3))
    with pytest.raises(UserError, match="32 distinct labels, but the set has only 10"):
        metrics.r_precision(e, e, labels=[i % 10 for i in range(64)])
    with pytest.raises(UserError, match="at least 32 samples"):
        metrics.r_precision(e[:10], e[:10])


def test_nan_and_empty_inputs_are_user_errors():
    e = np.zeros((40, 3))
    e[3, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        metrics.fid(e, e)
    with pytest.raises(UserError, match="empty"):
        metrics.mm_dist(np.zeros((0, 3)), np.zeros((0, 3)))


def test_mm_dist_and_diversity_hand_computed():
    t = np.zeros((4, 2))
    m = np.array([[3.0, 4.0], [0, 1], [0, 0], [6, 8]])
    assert metrics.mm_dist(t, m) == pytest.approx((5 + 1 + 0 + 10) / 4)
    # two points at distance 5: the fallback pairs them once
    assert metrics.diversity(np.array([[0.0, 0], [3, 4]]), n_pairs=300) == pytest.approx(5.0)
    # points on a line, Guo protocol with 3 pairs of 3 -> mean |i - j| over the drawn pairs
    pts = np.arange(3.0)[:, None]
    rng = np.random.default_rng(5)
    first, second = rng.choice(3, 3, replace=False), rng.choice(3, 3, replace=False)
    assert metrics.diversity(pts, n_pairs=3, seed=5) == pytest.approx(np.abs(first - second).mean())


def test_multimodality_zero_for_identical_repeats_and_scaled_otherwise():
    base = np.random.default_rng(0).normal(size=(5, 1, 3))
    same = np.repeat(base, 10, axis=1)
    assert metrics.multimodality(same) == 0.0
    two = np.zeros((3, 10, 1))
    two[:, 5:] = 2.0  # repeats 0-4 at 0, 5-9 at 2: each drawn pair differs by 0 or 2
    val = metrics.multimodality(two, n_pairs=10, seed=1)
    assert 0.0 < val < 2.0 and (val / 2.0 * 30) == pytest.approx(round(val / 2.0 * 30))
    with pytest.raises(UserError, match="at least 10 motions per text"):
        metrics.multimodality(np.zeros((2, 4, 3)))


def test_retrieval_recall_counts_ties_against_truth():
    sim = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.0, 0.8, 0.7]])
    r = metrics.retrieval_recall(sim, ks=(1, 2))
    assert r["t2m_R@1"] == pytest.approx(100 / 3)  # row 1 ties (counted as a miss), row 2 ranks 2nd
    assert r["t2m_R@2"] == pytest.approx(100.0)
    assert r["m2t_R@1"] == pytest.approx(200 / 3)  # column 1: 0.8 beats 0.5; columns 0, 2 top


def _walk(frames=20, fps=20.0, speed=1.0, foot_height=0.0):
    j = np.zeros((frames, 22, 3))
    j[:, :, 1] = 1.0  # body above the floor
    j[:, list(metrics.FOOT_JOINTS), 1] = foot_height
    j[:, :, 0] = (np.arange(frames) * speed / fps)[:, None]
    return j


def test_physical_metrics_on_known_motions():
    sliding = _walk(speed=1.0)  # feet on the floor moving at 1 m/s
    assert metrics.foot_skating_ratio(sliding) == 1.0
    assert metrics.foot_skating_ratio(_walk(speed=0.0)) == 0.0
    assert metrics.foot_skating_ratio(_walk(foot_height=0.2)) == 0.0  # no contact at all
    assert metrics.floor_penetration(_walk(foot_height=-0.03)) == pytest.approx(0.03)
    assert metrics.floor_penetration(sliding) == 0.0
    # x = t^3 on every joint: third derivative 6 m/s^3 exactly under finite differences
    t = np.arange(10) / 20.0
    cubic = np.zeros((10, 22, 3))
    cubic[:, :, 0] = (t ** 3)[:, None]
    assert metrics.jerk(cubic) == pytest.approx(6.0, rel=1e-9)
    with pytest.raises(UserError, match=r"\(frames, 22, 3\)"):
        metrics.jerk(np.zeros((10, 5, 3)))


def test_small_batch_retrieval_perfect_and_random():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(64, 8))
    r = metrics.small_batch_retrieval(e, e, labels=list(range(64)))
    assert r["t2m_R@1"] == 100.0 and r["m2t_R@10"] == 100.0
    noise = metrics.small_batch_retrieval(e, rng.normal(size=(64, 8)), labels=None, ks=(1, 32))
    assert noise["t2m_R@32"] == 100.0 and noise["t2m_R@1"] < 30.0


def test_physical_metrics_on_the_real_humanml3d_clip(humanml3d_reference):
    from easytune.motion.features import recover_from_ric

    joints = np.load(humanml3d_reference / "new_joints" / "012314.npy")
    ref = metrics.physical_metrics(joints)
    # a real capture: feet on (not under) the floor, ~10% of contacts moving > 0.5 m/s, smooth
    assert ref["floor_penetration"] == 0.0
    assert ref["foot_skating"] == pytest.approx(29 / 283, abs=1e-9)
    assert ref["jerk"] == pytest.approx(113.214, abs=1e-2)
    feats = np.load(humanml3d_reference / "new_joint_vecs" / "012314.npy")
    rec = metrics.physical_metrics(recover_from_ric(feats))
    assert rec == pytest.approx(ref, rel=1e-5)
    # sunk 2 m (below every foot lift): penetration = 2 m minus the mean height of the lowest foot joint
    sunk = joints.copy()
    sunk[..., 1] -= 2.0
    lowest = joints[:, list(metrics.FOOT_JOINTS), 1].min(1)
    assert metrics.floor_penetration(sunk) == pytest.approx(2.0 - lowest.mean(), abs=1e-6)
    assert 0.0 <= lowest.mean() < 0.05
