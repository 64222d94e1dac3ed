"""Distillers: registry, shared checks, k-means (faiss / sklearn), online k-means, coresets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from latentdd.distill import (
    DISTILLERS,
    Distiller,
    distiller_params,
    herding_order,
    kcenter_order,
    make_distiller,
    nearest_centroid,
    quantization_error,
    sqrt_weights,
    weighted_w2,
)
from latentdd.distill.quantize import fill_empty_cells, nearest_distinct_rows
from latentdd.errors import DataError
from latentdd.latents.types import Latents



def faiss_or_skip() -> None:
    pytest.importorskip("faiss")


@pytest.fixture(autouse=True)
def one_thread():
    # OpenMP spin-waiting makes tiny k-means runs slow on a busy 2-core machine; results do not depend on it.
    with threadpool_limits(1):
        yield


SHAPE = (2, 2, 2)  # (c, h, w) of the toy latents: d = 8


def as_latents(per_class: list[np.ndarray], names: list[str] | None = None) -> Latents:
    """Per-class (n_k, 8) arrays -> Latents of (sum n_k, 2, 2, 2), class k's rows contiguous."""
    x = np.concatenate(per_class).astype(np.float32)
    labels = np.concatenate([np.full(len(p), k) for k, p in enumerate(per_class)])
    names = names or [f"c{k}" for k in range(len(per_class))]
    return Latents(torch.from_numpy(x).reshape(-1, *SHAPE), torch.from_numpy(labels), names)


def blobs(sizes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs in 8 dims -> (points (sum sizes, 8), the blobs' exact means (len(sizes), 8))."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), 8)) * 30.0
    parts = [(c + 0.05 * rng.normal(size=(n, 8))).astype(np.float32) for c, n in zip(centres, sizes)]
    points = np.concatenate(parts)
    return points[rng.permutation(len(points))], np.stack([p.astype(np.float64).mean(0) for p in parts])


def match_rows(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Reorder `found` so row i is the one nearest expected[i] (asserting a one-to-one match)."""
    order = nearest_centroid(expected, found)[0]
    assert sorted(order.tolist()) == list(range(len(expected)))
    return found[order]


BLOB_SIZES = [[5, 15, 40], [30, 10, 20]]  # unequal on purpose: masses must follow


@pytest.fixture
def blob_latents():
    made = [blobs(sizes, seed=k) for k, sizes in enumerate(BLOB_SIZES)]
    return as_latents([p for p, _ in made]), [m for _, m in made]


# ---------------------------------------------------------------------------------------
# Pure functions on hand-worked numbers.


def test_quantization_error_hand_computed():
    points = np.array([[0, 0], [2, 0], [0, 3]], dtype=np.float32)
    centroids = np.array([[0, 0], [2, 1]], dtype=np.float32)
    index, sqdist = nearest_centroid(points, centroids)
    assert index.tolist() == [0, 1, 1]
    assert sqdist.tolist() == [0.0, 1.0, 8.0]  # (0,3) -> (2,1): 4 + 4
    assert quantization_error(points, centroids) == pytest.approx(math.sqrt(3.0), abs=1e-12)


def test_weighted_w2_hand_computed():
    points = np.array([[0, 0], [2, 0], [0, 3]], dtype=np.float32)
    centroids = np.array([[0, 0], [2, 1]], dtype=np.float32)
    # Voronoi masses (1/3, 2/3): the plan is the nearest assignment, so W2 = the quantization error.
    assert weighted_w2(points, centroids, np.array([1.0, 2.0])) == pytest.approx(math.sqrt(3.0), abs=1e-6)
    # Uniform (1/2, 1/2): 1/6 of (0,3)'s mass must go to (0,0) instead, costing 9 - 8 = 1 more per unit.
    assert weighted_w2(points, centroids, np.array([0.5, 0.5])) == pytest.approx(math.sqrt(3 + 1 / 6), abs=1e-6)
    with pytest.raises(DataError, match="weights"):
        weighted_w2(points, centroids, np.array([1.0]))


def test_sqrt_weights():
    assert sqrt_weights(np.array([0.2, 0.8])) == pytest.approx([1 / 3, 2 / 3])


def test_herding_hand_worked_order():
    # mean 3.25. t=1: 2 is nearest. t=2: target 2*3.25-2 = 4.5 -> 1 (3.5 away; 0 is 4.5, 10 is 5.5).
    # t=3: target 9.75-3 = 6.75 -> 10 (3.25 away; 0 is 6.75). Nearest-to-mean would pick 0 before 10.
    points = np.array([[0.0], [1.0], [2.0], [10.0]])
    assert herding_order(points, 4).tolist() == [2, 1, 3, 0]
    assert herding_order(points, 2).tolist() == [2, 1]


def test_herding_matches_running_mean_reference():
    x = np.random.default_rng(0).normal(size=(40, 5))
    chosen, mu = [], x.mean(0)
    for t in range(1, 9):  # the DC-benchmark loop, written with explicit norms
        left = [i for i in range(len(x)) if i not in chosen]
        dist = [np.linalg.norm(mu - (x[chosen].sum(0) + x[i]) / t) for i in left]
        chosen.append(left[int(np.argmin(dist))])
    assert herding_order(x, 8).tolist() == chosen


def test_herding_breaks_ties_by_index():
    points = np.array([[1.0], [-1.0], [1.0], [-1.0]])  # mean 0: all four tie at t=1
    assert herding_order(points, 4).tolist() == [0, 1, 2, 3]


def test_kcenter_hand_worked_order():
    # Start nearest the mean 3.25 (2); farthest from {2} is 10; then 0 (2 away) before 1 (1 away).
    points = np.array([[0.0], [1.0], [2.0], [10.0]])
    assert kcenter_order(points, 4).tolist() == [2, 3, 0, 1]
    square = np.array([[0, 0], [4, 0], [0, 4], [5, 5], [2, 2], [3, 2]], dtype=np.float64)
    # Mean (2.33, 2.17) is nearest (2, 2); (5, 5) is farthest from it; then (0, 0), (4, 0), (0, 4)
    # tie at squared distance 8 from {(2, 2), (5, 5)} -> the lowest index, 0.
    assert kcenter_order(square, 3).tolist() == [4, 3, 0]


def test_fill_empty_cells_moves_an_idle_centroid_onto_the_worst_point():
    points = np.array([[0, 0], [1, 0], [10, 0]], dtype=np.float32)
    centroids = np.array([[0.5, 0], [100, 100]], dtype=np.float32)  # the second serves no point
    filled, moves = fill_empty_cells(points, centroids)
    assert moves == 1
    assert filled.tolist() == [[0.5, 0.0], [10.0, 0.0]]
    same, moves = fill_empty_cells(np.zeros((4, 2), np.float32), np.array([[0, 0], [1, 1]], np.float32))
    assert moves == 0  # one distinct point: nothing to move to


def test_nearest_distinct_rows_never_repeats_a_row():
    points = np.array([[0, 0], [1, 0], [5, 5]], dtype=np.float32)
    centroids = np.array([[0.1, 0], [0.2, 0], [6, 6]], dtype=np.float32)  # both first centroids are nearest row 0
    assert nearest_distinct_rows(points, centroids).tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------
# k-means (DDOQ).


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_recovers_blobs_with_their_masses(blob_latents, backend):
    if backend == "faiss":
        faiss_or_skip()
    latents, means = blob_latents
    syn = make_distiller("kmeans", backend=backend).distill(latents, 3, seed=0)
    assert syn.extras["backend"] == backend
    for k, sizes in enumerate(BLOB_SIZES):
        found = syn.latents[syn.labels == k].reshape(3, -1).numpy()
        order = nearest_centroid(means[k], found)[0]
        np.testing.assert_allclose(found[order], means[k], atol=1e-4)
        weights = syn.weights[syn.labels == k].numpy()
        np.testing.assert_allclose(weights[order], np.array(sizes) / sum(sizes), atol=1e-7)
        assert weights.sum() == pytest.approx(1.0, abs=1e-6)
        # the recorded error is that of the returned centroids, in the same units
        x = latents.of_class(k).reshape(-1, 8).numpy()
        assert syn.extras["quantization_error"][k] == pytest.approx(quantization_error(x, found))
        assert syn.extras["quantization_error"][k] < 0.5  # noise std 0.05 in 8 dims: ~0.14


def test_faiss_and_sklearn_agree_on_blobs(blob_latents):
    faiss_or_skip()
    latents, _ = blob_latents
    a = make_distiller("kmeans", backend="faiss").distill(latents, 3, seed=1)
    b = make_distiller("kmeans", backend="sklearn").distill(latents, 3, seed=1)
    for k in range(len(BLOB_SIZES)):
        fa = a.latents[a.labels == k].reshape(3, -1).numpy()
        fb = b.latents[b.labels == k].reshape(3, -1).numpy()
        np.testing.assert_allclose(match_rows(fa, fb), fb, atol=1e-4)
    np.testing.assert_allclose(a.extras["quantization_error"], b.extras["quantization_error"], rtol=1e-4)


def test_kmeans_sqrt_weights(blob_latents):
    latents, _ = blob_latents
    mass = make_distiller("kmeans", backend="sklearn").distill(latents, 3, seed=0)
    root = make_distiller("kmeans", backend="sklearn", weights_mode="sqrt").distill(latents, 3, seed=0)
    assert torch.equal(mass.latents, root.latents)
    assert root.extras["weights_mass"] == mass.extras["weights_mass"]
    assert mass.weights.tolist() == pytest.approx(mass.extras["weights_mass"])
    for k, sizes in enumerate(BLOB_SIZES):
        m = torch.tensor(mass.extras["weights_mass"][3 * k : 3 * k + 3], dtype=torch.float64)
        expected = m.sqrt() / m.sqrt().sum()
        torch.testing.assert_close(root.weights[3 * k : 3 * k + 3].double(), expected, atol=1e-7, rtol=0)
        assert root.weights[3 * k : 3 * k + 3].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert root.weights.tolist() == pytest.approx(root.extras["weights_sqrt"])


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_same_seed_same_bits(backend):
    if backend == "faiss":
        faiss_or_skip()
    rng = np.random.default_rng(3)
    latents = as_latents([rng.normal(size=(80, 8)), rng.normal(size=(60, 8))])
    distiller = make_distiller("kmeans", backend=backend, restarts=2)
    a, b = distiller.distill(latents, 4, seed=7), distiller.distill(latents, 4, seed=7)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.weights, b.weights)
    c = distiller.distill(latents, 4, seed=8)  # another seed is allowed to differ; it must still be valid
    assert c.latents.shape == a.latents.shape


def test_kmeans_medoid_returns_real_rows_with_cell_masses(blob_latents):
    latents, _ = blob_latents
    plain = make_distiller("kmeans", backend="sklearn").distill(latents, 3, seed=0)
    med = make_distiller("kmeans", backend="sklearn", medoid=True).distill(latents, 3, seed=0)
    idx = torch.tensor(med.extras["medoid_indices"])
    assert torch.equal(med.latents, latents.latents[idx])
    assert torch.equal(latents.labels[idx], med.labels)
    assert len(set(idx.tolist())) == len(idx)
    for k in range(len(BLOB_SIZES)):
        members = torch.nonzero(latents.labels == k).flatten()
        rows = med.extras["medoid_class_indices"][3 * k : 3 * k + 3]
        assert members[rows].tolist() == idx[3 * k : 3 * k + 3].tolist()
    assert torch.equal(med.weights, plain.weights)  # masses of the k-means cells, unchanged
    assert med.extras["centroid_quantization_error"] == plain.extras["quantization_error"]
    assert all(m >= c for m, c in zip(med.extras["quantization_error"], plain.extras["quantization_error"]))


def test_kmeans_with_fewer_distinct_latents_than_ipc_warns_and_notes_it():
    latents = as_latents([np.repeat(np.eye(8)[:2], 5, axis=0)])  # 10 latents, 2 distinct values
    with pytest.warns(UserWarning, match="fewer than IPC 3 distinct latents"):
        syn = make_distiller("kmeans", backend="sklearn").distill(latents, 3, seed=0)
    assert syn.extras["empty_cells"] == [1]
    assert torch.isfinite(syn.latents).all()
    assert sorted(syn.weights.tolist()) == [0.0, 0.5, 0.5]


# ---------------------------------------------------------------------------------------
# Online k-means (D4M).


def test_kmeans_online_feeds_every_latent_including_the_leftover_batch(monkeypatch):
    from sklearn.cluster import MiniBatchKMeans

    fed: list[np.ndarray] = []
    original = MiniBatchKMeans.partial_fit

    def spy(self, X, *args, **kwargs):
        fed.append(np.array(X))
        return original(self, X, *args, **kwargs)

    monkeypatch.setattr(MiniBatchKMeans, "partial_fit", spy)
    rng = np.random.default_rng(0)
    per_class = [rng.normal(size=(23, 8)), rng.normal(size=(17, 8))]
    syn = make_distiller("kmeans-online", batch_size=10).distill(as_latents(per_class), 2, seed=0)
    assert [len(b) for b in fed] == [10, 10, 3, 10, 7]  # 23 = 10+10+3, 17 = 10+7: leftovers included
    for k, (start, stop) in enumerate([(0, 3), (3, 5)]):
        seen = np.concatenate(fed[start:stop])
        expected = per_class[k].astype(np.float32)
        assert np.array_equal(seen[np.lexsort(seen.T)], expected[np.lexsort(expected.T)])
    assert syn.extras["samples_seen"] == [23, 17] and syn.extras["batches"] == [3, 2]
    assert syn.weights.tolist() == [0.5] * 4


def test_kmeans_online_default_batch_is_km_expand_times_ipc_and_errors_compare():
    rng = np.random.default_rng(1)
    latents = as_latents([rng.normal(size=(50, 8))])
    syn = make_distiller("kmeans-online", km_expand=4).distill(latents, 3, seed=0)
    assert syn.extras["batch_size"] == 12 and syn.extras["batches"] == [5]
    x = latents.latents.reshape(50, -1).numpy()
    assert syn.extras["quantization_error"][0] == pytest.approx(quantization_error(x, syn.latents.reshape(3, -1)))
    with pytest.raises(DataError, match="batch_size 2 is smaller than IPC 3"):
        make_distiller("kmeans-online", batch_size=2).distill(latents, 3, seed=0)


# ---------------------------------------------------------------------------------------
# Coresets.


def test_random_is_seeded_and_picks_real_latents_of_each_class():
    rng = np.random.default_rng(2)
    latents = as_latents([rng.normal(size=(30, 8)), rng.normal(size=(40, 8))])
    d = make_distiller("random")
    a, b, c = d.distill(latents, 5, seed=0), d.distill(latents, 5, seed=0), d.distill(latents, 5, seed=1)
    assert a.extras["indices"] == b.extras["indices"] != c.extras["indices"]
    idx = torch.tensor(a.extras["indices"])
    assert torch.equal(latents.latents[idx], a.latents) and torch.equal(latents.labels[idx], a.labels)
    assert len(set(idx.tolist())) == 10


def test_coresets_record_global_indices_on_interleaved_labels():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(30, *SHAPE)).astype(np.float32))
    labels = torch.tensor([0, 1, 2] * 10)  # classes interleaved: class-local and global indices differ
    latents = Latents(x, labels, ["a", "b", "c"])
    for name in ("herding", "kcenter", "random"):
        syn = make_distiller(name).distill(latents, 2, seed=0)
        idx = torch.tensor(syn.extras["indices"])
        assert torch.equal(x[idx], syn.latents) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
        assert torch.equal(labels[idx], syn.labels)
    kc = make_distiller("kcenter").distill(latents, 2, seed=0)
    members = torch.nonzero(labels == 1).flatten()
    rows = kcenter_order(x[members].reshape(10, -1).numpy(), 2)
    assert kc.extras["indices"][2:4] == members[rows].tolist()


# ---------------------------------------------------------------------------------------
# Every registered distiller.


# Parameters that keep the optimising distillers to a few cheap iterations in tests.
FAST = {name: {"iterations": 3, "width": 8, "pool_start": 1, "batch_real": 6, "net_batch": 8, "train_steps": 1}
        for name in ("bacon", "idm")} | {
            name: {"iterations": 3, "width": 8, "batch_real": 6, "embedding": "latent"} for name in ("dm", "dc", "dsa")} | {
            "forgetting": {"epochs": 2, "width": 8, "batch": 8}, "rded": {"factor": 1},
            "disagreement": {"proxy_epochs": 1, "proxy_width": 4, "proxy_depth": 1},
            "mtt": {"iterations": 2, "width": 8, "embedding": "latent", "experts": 1, "buffer_epochs": 3,
                    "max_start_epoch": 1, "syn_steps": 2, "lr": 0.01}}


class _LinearNet(torch.nn.Module):
    """A tiny classifier of (B, 2, 2, 2) inputs with an `embed`, as a teacher for the teacher-aware distillers."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = torch.nn.Linear(8, 3)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.linspace(-1, 1, 24).view(3, 8))

    def embed(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))


def _teacher_context():
    from latentdd.distill import DistillContext
    from latentdd.evaluate.teacher import Teacher

    teacher = Teacher(_LinearNet(), torch.zeros(2), torch.ones(2), {"name": "teacher:tiny", "key": "tiny"})
    return {"context": DistillContext(decode=lambda z: z, teacher=teacher)}


@pytest.mark.parametrize("name", list(DISTILLERS))
def test_every_distiller_shapes_labels_weights_and_determinism(name):
    rng = np.random.default_rng(5)
    latents = as_latents([rng.normal(size=(n, 8)) + 5 * k for k, n in enumerate([12, 20, 15])])
    distiller = make_distiller(name, **FAST.get(name, {}))
    assert isinstance(distiller, Distiller) and distiller.name == name
    extra = _teacher_context() if getattr(distiller, "uses_teacher", False) else {}
    syn = distiller.distill(latents, 4, seed=3, **extra)
    stored = 4 * (distiller.factor**2 if name == "rded" else 1)  # rded stores factor**2 latents an image
    assert syn.latents.shape == (3 * stored, *SHAPE) and syn.latents.dtype == torch.float32
    assert syn.labels.tolist() == [0] * stored + [1] * stored + [2] * stored
    assert syn.method == name and syn.params["ipc"] == 4 and syn.params["seed"] == 3
    assert syn.class_names == latents.class_names
    per_class = syn.weights.reshape(3, stored).sum(1)
    torch.testing.assert_close(per_class, torch.ones(3), atol=1e-6, rtol=0)
    assert len(syn.extras["quantization_error"]) == 3
    again = distiller.distill(latents, 4, seed=3, **extra)
    assert torch.equal(syn.latents, again.latents) and torch.equal(syn.weights, again.weights)


# ---------------------------------------------------------------------------------------
# Errors.


def test_ipc_larger_than_a_class_names_the_class():
    names = [f"n{k}" for k in range(8)] + ["Bag"]
    per_class = [np.zeros((6, 8))] * 8 + [np.arange(40, dtype=float).reshape(5, 8)]
    latents = as_latents(per_class, names)
    for name in DISTILLERS:
        with pytest.raises(DataError) as err:
            make_distiller(name).distill(latents, 6, seed=0)
        assert str(err.value) == "IPC 6 is larger than class 'Bag' (index 8), which has 5 latents; lower --ipc"


def test_empty_class_nan_and_bad_ipc_are_refused():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(10, 8))
    empty = Latents(torch.from_numpy(x.astype(np.float32)).reshape(-1, *SHAPE), torch.zeros(10, dtype=torch.long),
                    ["full", "hollow"])
    with pytest.raises(DataError, match="class 'hollow' \\(index 1\\) has no latents"):
        make_distiller("kmeans").distill(empty, 2, seed=0)
    x[7, 3] = np.nan
    with pytest.raises(DataError, match="class 'c0' \\(index 0\\) has 1 latent\\(s\\) with NaN or inf.*index 7"):
        make_distiller("herding").distill(as_latents([x]), 2, seed=0)
    x[7, 3] = np.inf
    with pytest.raises(DataError, match="NaN or inf"):
        make_distiller("kmeans-online").distill(as_latents([x]), 2, seed=0)
    for ipc in (0, -1, 2.0):
        with pytest.raises(DataError, match="IPC must be a positive integer"):
            make_distiller("random").distill(as_latents([rng.normal(size=(10, 8))]), ipc, seed=0)
    with pytest.raises(DataError, match="seed must be a non-negative integer"):
        make_distiller("random").distill(as_latents([rng.normal(size=(10, 8))]), 2, seed=-1)


def test_registry_lists_distillers_and_their_parameters():
    # The seed methods, in the order the package registers them (a new distiller adds itself after them).
    assert list(DISTILLERS)[:11] == ["kmeans", "kmeans-online", "random", "herding", "kcenter", "bacon", "idm", "dm",
                                     "dc", "dsa", "forgetting"]
    assert distiller_params("kmeans") == {"backend": "auto", "niter": 100, "restarts": 1,
                                          "weights_mode": "mass", "medoid": False}
    assert distiller_params("herding") == {}
    assert make_distiller("kmeans", niter=5, weights_mode="sqrt").niter == 5


def test_make_distiller_refuses_unknown_names_params_and_values():
    with pytest.raises(DataError, match="unknown distiller 'kmedoids'; known distillers: kmeans, kmeans-online"):
        make_distiller("kmedoids")
    with pytest.raises(DataError, match="has no parameter 'n_iter'; its parameters are: backend, niter"):
        make_distiller("kmeans", n_iter=5)
    with pytest.raises(DataError, match="has no parameter 'seed'"):
        make_distiller("herding", seed=0)
    with pytest.raises(DataError, match="backend must be one of auto, faiss, faiss-cpu, faiss-gpu, sklearn; got 'cuml'"):
        make_distiller("kmeans", backend="cuml")
    with pytest.raises(DataError, match="weights_mode must be one of mass, sqrt"):
        make_distiller("kmeans", weights_mode="log")
    with pytest.raises(DataError, match="restarts must be a positive integer"):
        make_distiller("kmeans", restarts=0)
