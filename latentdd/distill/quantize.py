"""Optimal quantization of each class's latents: k-means (DDOQ) and online mini-batch k-means (D4M).

Per class, K = IPC centroids of the flattened latents (n_k, d), d = c*h*w. The pure
functions here (`nearest_centroid`, `quantization_error`, `voronoi_masses`,
`sqrt_weights`, `fill_empty_cells`, `nearest_distinct_rows`) work on numpy arrays and
accumulate in float64; the two distillers wire them to a k-means backend.

Quality measure (DDOQ): for a quantizer with centroids c_1..c_K and Voronoi-mass weights,
the Wasserstein-2 distance between the class's empirical measure and the weighted
centroids is

    W2 = sqrt( (1/n) * sum_i min_j ||x_i - c_j||^2 )        (`quantization_error`)

For uniformly weighted centroids (kmeans-online, coresets) the same number is still the
quantization error, and a lower bound on their W2 to the data; every distiller reports it
so methods compare on one scale. `weighted_w2` solves the exact W2 for any weights.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from latentdd.config import PositiveInt
from latentdd.distill.base import (
    CheckedParams,
    assemble,
    check_distill_input,
    class_label,
    class_points,
    class_seeds,
    register_distiller,
    uniform_weights,
)
from latentdd.errors import DataError, LatentDDError
from latentdd.latents.types import Latents, SyntheticLatents

_CHUNK = 4096  # rows per distance block: bounds memory at _CHUNK * k float64s


# ---------------------------------------------------------------------------------------
# Pure functions.


def nearest_centroid(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi assignment: points (n, d), centroids (k, d) -> (index (n,) int64, squared distance (n,) float64).

    Squared distances are ||x||^2 - 2 x.c + ||c||^2 in float64, clipped at 0; ties go to
    the lowest centroid index.
    """
    points, centroids = np.asarray(points), np.asarray(centroids, dtype=np.float64)
    if points.ndim != 2 or centroids.ndim != 2 or points.shape[1] != centroids.shape[1]:
        raise DataError(f"points (n, d) and centroids (k, d) must share d; got {points.shape} and {centroids.shape}")
    if len(centroids) == 0:
        raise DataError("need at least one centroid")
    c_sq = np.einsum("kd,kd->k", centroids, centroids)
    index = np.empty(len(points), dtype=np.int64)
    sqdist = np.empty(len(points), dtype=np.float64)
    for start in range(0, len(points), _CHUNK):
        x = points[start : start + _CHUNK].astype(np.float64)  # (b, d)
        d2 = np.einsum("bd,bd->b", x, x)[:, None] - 2.0 * (x @ centroids.T) + c_sq[None, :]  # (b, k)
        np.maximum(d2, 0.0, out=d2)
        j = d2.argmin(axis=1)
        index[start : start + len(x)] = j
        sqdist[start : start + len(x)] = d2[np.arange(len(x)), j]
    return index, sqdist


def quantization_error(points: np.ndarray, centroids: np.ndarray) -> float:
    """sqrt(mean_i min_j ||x_i - c_j||^2) for points (n, d) and centroids (k, d), in float64.

    The W2 distance between the points (each of mass 1/n) and the centroids weighted by
    the masses of their Voronoi cells; same units as the latents.
    """
    _, sqdist = nearest_centroid(points, centroids)
    return float(np.sqrt(sqdist.mean()))


def weighted_w2(points: np.ndarray, centroids: np.ndarray, weights: np.ndarray) -> float:
    """Exact W2 between points (n, d), each of mass 1/n, and centroids (k, d) of masses `weights` (k,).

    Solves the transportation LP (n*k variables, scipy HiGHS; seconds for n = 6000,
    k = 10, so it is a measurement, not a training-time routine). Equals
    `quantization_error` when the weights are the Voronoi masses, and is larger otherwise:
    with uniform weights (D4M) some points must travel to a centroid that is not their
    nearest. This is the quantity DDOQ compares between its weighted centroids and D4M's.
    """
    import scipy.sparse as sp
    from scipy.optimize import linprog

    x, c = np.asarray(points, np.float64), np.asarray(centroids, np.float64)
    w = np.asarray(weights, np.float64)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1] or w.shape != (len(c),):
        raise DataError(f"need points (n, d), centroids (k, d), weights (k,); got {x.shape}, {c.shape}, {w.shape}")
    if len(x) == 0 or len(c) == 0 or (w < 0).any() or w.sum() <= 0:
        raise DataError("need at least one point and one centroid, and non-negative weights with a positive sum")
    n, k = len(x), len(c)
    cost = np.maximum((x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None], 0.0)  # (n, k)
    rows = sp.kron(sp.eye(n), np.ones((1, k)))  # the plan P (n, k) flattened row-major: sum_j P_ij = 1/n
    cols = sp.kron(np.ones((1, n)), sp.eye(k))  # sum_i P_ij = w_j
    res = linprog(cost.ravel(), A_eq=sp.vstack([rows, cols]).tocsr(),
                  b_eq=np.concatenate([np.full(n, 1.0 / n), w / w.sum()]), bounds=(0, None), method="highs")
    if res.status != 0:
        raise LatentDDError(f"the transport LP failed: {res.message}")
    return float(np.sqrt(max(res.fun, 0.0)))


def voronoi_masses(index: np.ndarray, k: int) -> np.ndarray:
    """Nearest-centroid indices (n,) -> (k,) float64 fraction of points in each cell (sums to 1)."""
    return np.bincount(index, minlength=k).astype(np.float64) / len(index)


def sqrt_weights(mass: np.ndarray) -> np.ndarray:
    """(k,) masses -> (k,) w proportional to sqrt(mass), summing to 1 (DDOQ's variance-reduction heuristic)."""
    root = np.sqrt(np.asarray(mass, dtype=np.float64))
    return root / root.sum()


def fill_empty_cells(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, int]:
    """Move centroids whose Voronoi cell is empty onto the worst-quantized points.

    points (n, d), centroids (k, d) -> (centroids (k, d) float32, number of moves). While a
    cell is empty and some point lies at a positive distance from its nearest centroid,
    the lowest-index empty centroid jumps onto the point farthest from its nearest centroid
    (lowest index on ties). Each move lowers the quantization error by that point's
    squared distance / n (an empty centroid serves no point, so removing it costs
    nothing), so the loop ends; moved centroids are not refined further. Cells can stay
    empty only when the class has fewer than k distinct latents.
    """
    centroids = np.array(centroids, dtype=np.float32)
    moves = 0
    for _ in range(len(points) + len(centroids)):  # a guard: each move strictly lowers the error
        index, sqdist = nearest_centroid(points, centroids)
        empty = np.flatnonzero(np.bincount(index, minlength=len(centroids)) == 0)
        if empty.size == 0 or sqdist.max() <= 0.0:
            break
        centroids[empty[0]] = points[int(sqdist.argmax())]
        moves += 1
    return centroids, moves


def nearest_distinct_rows(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Medoids: for centroid j = 0, 1, ... in turn, the nearest row of `points` not yet taken.

    points (n, d), centroids (k, d), k <= n -> (k,) int64 distinct row indices. Taken in
    centroid order so two centroids sharing a nearest point get two different rows (the
    synthetic set never holds one latent twice); ties go to the lowest row index.
    """
    x = np.asarray(points, dtype=np.float64)
    x_sq = np.einsum("nd,nd->n", x, x)
    taken = np.zeros(len(x), dtype=bool)
    rows = np.empty(len(centroids), dtype=np.int64)
    for j, c in enumerate(np.asarray(centroids, dtype=np.float64)):
        d2 = x_sq - 2.0 * (x @ c) + c @ c  # (n,)
        d2[taken] = np.inf
        rows[j] = int(d2.argmin())
        taken[rows[j]] = True
    return rows


# ---------------------------------------------------------------------------------------
# k-means backends: points (n, d) float32 -> centroids (k, d) float32.


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def faiss_num_gpus() -> int:
    """GPUs the installed faiss can use: 0 for the faiss-cpu wheel (or no faiss), >0 for faiss-gpu on a GPU machine."""
    try:
        import faiss
    except ImportError:
        return 0
    get = getattr(faiss, "get_num_gpus", None)  # CPU builds of some releases lack it
    return int(get()) if get is not None else 0


@functools.lru_cache(maxsize=1)
def _gpu_resources():
    # One StandardGpuResources for the process: creating it allocates the GPU's scratch memory
    # (about 1.5 GB) and costs more than clustering one class, and a 1000-class run clusters 1000 times.
    import faiss

    return faiss.StandardGpuResources()


def gpu_flat_index(d: int):
    """An exact L2 index of dimension d on GPU 0 (faiss's Lloyd step runs its nearest-centroid search on it)."""
    import faiss

    return faiss.GpuIndexFlatL2(_gpu_resources(), d)


def kmeans_faiss(points: np.ndarray, k: int, *, niter: int, seeds: list[int], gpu: bool = False) -> np.ndarray:
    """Lloyd k-means with faiss, one run per seed, keeping the lowest quantization error.

    faiss seeds k-means with k random points by default (only recent releases offer
    k-means++ through `init_method`), so each run starts from sklearn's greedy k-means++
    seeds (`sklearn.cluster.kmeans_plusplus`, random_state=the run's seed) passed as
    `init_centroids`: the same seeding on every faiss version, and the same as the sklearn
    backend's (sklearn's KMeans draws its first restart's seeds the same way). Restarts
    are our own loop because faiss's `nredo` would restart from the same given centroids.
    faiss runs at most `niter` iterations (older releases exactly `niter`; recent ones
    stop once the objective stops improving), on every point (its default subsamples to
    256 points per centroid), and splits a big cluster when one goes empty.
    gpu: run the nearest-centroid searches on a faiss GPU index (`gpu_flat_index`), the
    rest of faiss.Kmeans unchanged; the centroids agree with the CPU's up to float rounding.
    """
    try:
        import faiss
    except ImportError as err:
        raise ImportError("k-means backend 'faiss' needs faiss: pip install 'latentdd[cpu]' (faiss-cpu), "
                          "'latentdd[gpu]' (faiss-gpu-cu12), or use backend='sklearn'") from err
    from sklearn.cluster import kmeans_plusplus

    points = np.ascontiguousarray(points, dtype=np.float32)
    n, d = points.shape
    best, best_err = None, math.inf
    for run_seed in seeds:
        init, _ = kmeans_plusplus(points, k, random_state=run_seed)
        km = faiss.Kmeans(d, k, niter=niter, nredo=1, seed=run_seed, verbose=False,
                          max_points_per_centroid=n, min_points_per_centroid=1)
        if gpu:  # Kmeans.train clusters with whatever index it holds
            km.index = gpu_flat_index(d)
        km.train(points, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
        err = quantization_error(points, km.centroids)
        if err < best_err:  # strict: ties keep the earlier run
            best, best_err = np.array(km.centroids, dtype=np.float32), err
    return best


def kmeans_sklearn(points: np.ndarray, k: int, *, niter: int, restarts: int, seed: int) -> np.ndarray:
    """sklearn KMeans(init="k-means++", n_init=restarts, max_iter=niter, random_state=seed).

    Stops early once centroids move less than sklearn's default tol (1e-4, relative).
    """
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", n_init=restarts, max_iter=niter, random_state=seed)
    with warnings.catch_warnings():
        # Fewer distinct points than k: we detect and report empty cells ourselves.
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        km.fit(points)
    return np.asarray(km.cluster_centers_, dtype=np.float32)


# ---------------------------------------------------------------------------------------
# Distillers.

BACKENDS = ("auto", "faiss", "faiss-cpu", "faiss-gpu", "sklearn")
WEIGHTS_MODES = ("mass", "sqrt")


@register_distiller
@dataclass
class KMeansDistiller(CheckedParams):
    """DDOQ: per class, k-means with K = IPC; centroids weighted by their Voronoi masses.

    backend: "faiss" (see `kmeans_faiss`), "sklearn" (see `kmeans_sklearn`) or "auto"
        (faiss when importable, else sklearn). Both start from k-means++ seeds, so they
        agree up to local optima and iteration counts. faiss runs on a GPU whenever the
        installed faiss reports one (`faiss_num_gpus`: the faiss-gpu wheel, `pip install
        latentdd[gpu]`, on a CUDA machine); "faiss-cpu" keeps it on the CPU, "faiss-gpu"
        insists on the GPU (an error without one). `resolved_backend` says which.
    niter: at most this many Lloyd iterations (sklearn also stops at its tol).
    restarts: k-means++ restarts per class; the lowest-error run is kept.
    weights_mode: "mass" (w_j = fraction of the class's latents nearest centroid j) or
        "sqrt" (w_j proportional to sqrt(mass_j), renormalised per class).
    medoid: replace each centroid by the nearest latent of its class not already chosen
        (`nearest_distinct_rows`): real latents, with the masses of the original cells as
        weights (not recomputed for the medoids, so the weights describe the clustering).

    Masses are recomputed from the final centroids in float64 (not taken from the
    backend). An empty cell is re-seeded with `fill_empty_cells`; a cell that stays empty
    (fewer distinct latents than IPC) keeps weight 0 and is counted in extras
    "empty_cells", with a warning.

    extras (lists in class order; per-centroid lists have num_classes * IPC entries):
        quantization_error: per class, of the returned latents (`quantization_error`);
        centroid_quantization_error: per class, of the centroids (= the above unless medoid);
        weights_mass, weights_sqrt: per centroid, both modes whichever is returned;
        reseeded_cells, empty_cells: per class counts; backend: the library used (faiss or
        sklearn); device: where it ran (cpu or gpu);
        medoid_indices (global, into the Latents), medoid_class_indices (into the class):
        per centroid, only when medoid=True.
    """

    name: ClassVar[str] = "kmeans"
    splits_by_class: ClassVar[bool] = True  # every class from its own seeds (class_seeds): a share distils alone

    backend: Literal[BACKENDS] = "auto"
    niter: PositiveInt = 100
    restarts: PositiveInt = 1
    weights_mode: Literal[WEIGHTS_MODES] = "mass"
    medoid: bool = False

    def resolved_backend(self) -> tuple[str, str]:
        """(library, device) this distiller clusters with: ("faiss", "gpu"), ("faiss", "cpu") or ("sklearn", "cpu").

        DataError for "faiss-gpu" when faiss sees no GPU, so a run meant for the GPU never
        silently takes the CPU's hours.
        """
        if self.backend == "sklearn" or (self.backend == "auto" and not faiss_available()):
            return "sklearn", "cpu"
        if self.backend == "faiss-cpu":
            return "faiss", "cpu"
        gpus = faiss_num_gpus()
        if self.backend == "faiss-gpu" and gpus == 0:
            raise DataError("kmeans backend 'faiss-gpu' needs a faiss that sees a GPU, and the installed faiss sees "
                            "none (faiss-cpu, or no CUDA device): on a CUDA machine pip uninstall faiss-cpu && "
                            "pip install 'latentdd[gpu]', or use backend=faiss (GPU when there is one)")
        return "faiss", "gpu" if gpus > 0 else "cpu"

    def cluster(self, points: np.ndarray, k: int, seeds: list[int]) -> np.ndarray:
        """points (n, d) float32 -> (k, d) float32 centroids with the chosen backend."""
        library, device = self.resolved_backend()
        if library == "faiss":
            return kmeans_faiss(points, k, niter=self.niter, seeds=seeds, gpu=device == "gpu")
        return kmeans_sklearn(points, k, niter=self.niter, restarts=self.restarts, seed=seeds[0])

    def distill(self, latents: Latents, ipc: int, *, seed: int, classes: list[int] | None = None) -> SyntheticLatents:
        members = check_distill_input(latents, ipc, seed, classes)
        backend = self.resolved_backend()  # an unusable "faiss-gpu" fails here, before any class is clustered
        if self.backend == "auto" and backend[0] == "sklearn":
            warnings.warn("faiss is not installed, so kmeans clusters with sklearn (slower, slightly different "
                          "centroids): pip install 'latentdd[cpu]' (or 'latentdd[gpu]' on a CUDA machine)", stacklevel=2)
        out, extras = [], _empty_extras("centroid_quantization_error", "weights_mass", "weights_sqrt",
                                        "reseeded_cells", "empty_cells")
        if self.medoid:
            extras.update(medoid_indices=[], medoid_class_indices=[])
        for k, idx in zip(range(len(members)) if classes is None else classes, members):
            x = class_points(latents, idx)  # (n_k, d)
            centroids = self.cluster(x, ipc, class_seeds(seed, k, self.restarts))
            centroids, moves = fill_empty_cells(x, centroids)
            assign, sqdist = nearest_centroid(x, centroids)
            mass = voronoi_masses(assign, ipc)
            empty = int((mass == 0).sum())
            if empty:
                warnings.warn(f"kmeans: {class_label(latents, k)} has fewer than IPC {ipc} distinct latents; "
                              f"{empty} centroid(s) get weight 0", stacklevel=2)
            extras["centroid_quantization_error"].append(float(np.sqrt(sqdist.mean())))
            if self.medoid:
                rows = nearest_distinct_rows(x, centroids)
                centroids = x[rows]
                extras["medoid_class_indices"] += rows.tolist()
                extras["medoid_indices"] += idx[rows].tolist()
            extras["quantization_error"].append(quantization_error(x, centroids))
            extras["weights_mass"] += mass.tolist()
            extras["weights_sqrt"] += sqrt_weights(mass).tolist()
            extras["reseeded_cells"].append(moves)
            extras["empty_cells"].append(empty)
            out.append(centroids)
        extras["backend"], extras["device"] = backend
        weights = torch.tensor(extras["weights_mass" if self.weights_mode == "mass" else "weights_sqrt"],
                               dtype=torch.float32)
        return assemble(latents, out, method=self.name, params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed},
                        weights=weights, extras=extras, classes=classes)


@register_distiller
@dataclass
class OnlineKMeansDistiller(CheckedParams):
    """D4M: per class, sklearn MiniBatchKMeans(n_clusters=IPC) fed by partial_fit; uniform weights.

    The class's latents are shuffled (seeded) and fed in mini-batches of `batch_size`
    (None: km_expand * IPC, D4M's choice) for one pass, INCLUDING the final leftover
    batch. D4M's public code (gen_prototype.py) flushes the leftover latents of only the
    class seen last, and only when at least IPC are left, so every other class loses up
    to km_expand * IPC - 1 latents; we feed them all. D4M also uses random_state=0 for
    every class; here class k's shuffle and model seeds come from `class_seeds(seed, k)`.
    The first batch initialises the centroids (k-means++), so batch_size must be >= IPC.

    extras: quantization_error per class (same function as kmeans, so comparable);
    batch_size; batches and samples_seen per class (samples_seen = the class's size).
    """

    name: ClassVar[str] = "kmeans-online"
    splits_by_class: ClassVar[bool] = True

    km_expand: PositiveInt = 10
    batch_size: PositiveInt | None = None

    def distill(self, latents: Latents, ipc: int, *, seed: int, classes: list[int] | None = None) -> SyntheticLatents:
        from sklearn.cluster import MiniBatchKMeans

        members = check_distill_input(latents, ipc, seed, classes)
        batch = self.batch_size if self.batch_size is not None else self.km_expand * ipc
        if batch < ipc:
            raise DataError(f"kmeans-online batch_size {batch} is smaller than IPC {ipc}; the first batch "
                            "initialises the IPC centroids, so raise batch_size to at least IPC")
        out, extras = [], _empty_extras("batches", "samples_seen")
        for k, idx in zip(range(len(members)) if classes is None else classes, members):
            x = class_points(latents, idx)  # (n_k, d)
            shuffle_seed, model_seed = class_seeds(seed, k, 2)
            order = np.random.default_rng(shuffle_seed).permutation(len(x))
            model = MiniBatchKMeans(n_clusters=ipc, random_state=model_seed, batch_size=batch, n_init="auto")
            seen = 0
            for start in range(0, len(x), batch):  # the last, shorter batch included
                chunk = x[order[start : start + batch]]
                model.partial_fit(chunk)
                seen += len(chunk)
            centroids = np.asarray(model.cluster_centers_, dtype=np.float32)
            extras["quantization_error"].append(quantization_error(x, centroids))
            extras["batches"].append(math.ceil(len(x) / batch))
            extras["samples_seen"].append(seen)
            out.append(centroids)
        extras["batch_size"] = batch
        return assemble(latents, out, method=self.name, params={**dataclasses.asdict(self), "ipc": ipc, "seed": seed},
                        weights=uniform_weights(len(members), ipc), extras=extras, classes=classes)


def _empty_extras(*keys: str) -> dict:
    return {"quantization_error": [], **{key: [] for key in keys}}
