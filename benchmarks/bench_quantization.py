"""How much better full k-means (DDOQ) quantizes each class than D4M's online k-means, and at what cost.

For each IPC, runs per class, on the same latents:
    kmeans (faiss)     -- make_distiller("kmeans", backend="faiss")
    kmeans (sklearn)   -- make_distiller("kmeans", backend="sklearn")
    kmeans-online      -- make_distiller("kmeans-online"): D4M's MiniBatchKMeans, one pass
and prints the quantization error sqrt(mean_i min_j ||x_i - c_j||^2) averaged over
classes (lower is better; same function for every method), the total wall time, the
error ratio kmeans / kmeans-online and the faiss / sklearn time ratio. With
--transport-classes N it also solves (`weighted_w2`), on the first N classes, the exact
W2 between the class's latents and each method's WEIGHTED centroids (Voronoi masses for
kmeans, uniform 1/IPC for kmeans-online): the quantity DDOQ compares (it reports about
15% lower W2 than D4M: target ratio <= 0.85). For kmeans it equals the quantization
error; for uniform weights it is larger, and most of the gap can lie there.

    python benchmarks/bench_quantization.py                          # synthetic data, IPC 10
    python benchmarks/bench_quantization.py --ipc 1 10 50 --threads 1
    python benchmarks/bench_quantization.py --transport-classes 2     # + exact W2 (slow LP)
    python benchmarks/bench_quantization.py --latents ~/.cache/latentdd/latents/<dataset>-<hash>/train

--latents: a latent cache folder (what `latentdd encode` / `latentdd run` write), or a
safetensors file with `latents` (N, c, h, w) float and `labels` (N,) int.
Without it, synthetic data: --classes (10) classes x --per-class (6000) latents x --dim
(256) dims, stored as (N, dim, 1, 1). Class k is a Gaussian mixture of --components (20)
components: component means mu_k + N(0, I), mu_k ~ N(0, I); mixture weights ~
Dirichlet(2, ..., 2) (unequal cells); within a component, N(0, 0.5^2 I). All drawn from
numpy.random.default_rng(--data-seed).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from latentdd.distill import make_distiller
from latentdd.distill.quantize import faiss_available, weighted_w2
from latentdd.latents.types import Latents


def synthetic_latents(classes: int, per_class: int, dim: int, components: int, seed: int) -> Latents:
    """The documented Gaussian-mixture classes -> Latents of (classes*per_class, dim, 1, 1) float32."""
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for k in range(classes):
        means = rng.normal(size=(1, dim)) + rng.normal(size=(components, dim))  # (components, dim)
        which = rng.choice(components, size=per_class, p=rng.dirichlet(np.full(components, 2.0)))
        parts.append((means[which] + 0.5 * rng.normal(size=(per_class, dim))).astype(np.float32))
        labels.append(np.full(per_class, k))
    x = torch.from_numpy(np.concatenate(parts)).reshape(-1, dim, 1, 1)
    return Latents(x, torch.from_numpy(np.concatenate(labels)), [str(k) for k in range(classes)])


def load_latents(path: str) -> Latents:
    """A latent cache folder (`latentdd encode --out DIR`) or a safetensors file with `latents` and `labels`."""
    if Path(path).is_dir():
        from latentdd.latents.cache import load_latents as load_cache

        return load_cache(path)
    from safetensors.torch import load_file

    tensors = load_file(path)
    labels = tensors["labels"].long()
    return Latents(tensors["latents"].float(), labels, [str(k) for k in range(int(labels.max()) + 1)])


def measure(latents: Latents, name: str, *, ipc: int, seed: int, transport_classes: int, **params) -> dict:
    """-> {"error": mean over classes of the quantization error, "seconds", "w2": mean over the
    first `transport_classes` classes of the exact W2 of the weighted result (None if 0)}."""
    start = time.perf_counter()
    syn = make_distiller(name, **params).distill(latents, ipc, seed=seed)
    seconds = time.perf_counter() - start
    w2 = [
        weighted_w2(latents.of_class(k).reshape(-1, int(np.prod(latents.latent_shape))).numpy(),
                     syn.latents[syn.labels == k].reshape(ipc, -1).numpy(),
                     syn.weights[syn.labels == k].double().numpy())
        for k in range(min(transport_classes, len(latents.class_names)))
    ]
    return {"error": float(np.mean(syn.extras["quantization_error"])), "seconds": seconds,
            "w2": float(np.mean(w2)) if w2 else None}


def warm_up(latents: Latents) -> None:
    """One untimed run of each method on a few latents, so imports and thread pools are not timed."""
    keep = torch.cat([torch.nonzero(latents.labels == k).flatten()[:20] for k in range(len(latents.class_names))])
    small = Latents(latents.latents[keep], latents.labels[keep], latents.class_names)
    for backend in (["faiss"] if faiss_available() else []) + ["sklearn"]:
        make_distiller("kmeans", backend=backend, niter=2).distill(small, 2, seed=0)
    make_distiller("kmeans-online").distill(small, 2, seed=0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latents", help="latent cache folder or safetensors file (default: synthetic data)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=6000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--components", type=int, default=20)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--ipc", type=int, nargs="+", default=[10])
    p.add_argument("--seed", type=int, default=0, help="distillation seed")
    p.add_argument("--niter", type=int, default=100, help="kmeans: at most this many Lloyd iterations")
    p.add_argument("--restarts", type=int, default=1, help="kmeans: k-means++ restarts")
    p.add_argument("--km-expand", type=int, default=10, help="kmeans-online: batch = km_expand * IPC (D4M)")
    p.add_argument("--transport-classes", type=int, default=0,
                   help="also compute the exact W2 of each weighted result (transport LP, slow) on this many classes")
    p.add_argument("--threads", type=int, help="cap BLAS/OpenMP threads (faiss, sklearn) for the whole run")
    args = p.parse_args(argv)

    if args.latents:
        latents = load_latents(args.latents)
        what = f"{args.latents}"
    else:
        latents = synthetic_latents(args.classes, args.per_class, args.dim, args.components, args.data_seed)
        what = (f"synthetic: {args.classes} classes x {args.per_class} latents x {args.dim} dims "
                f"(Gaussian mixture, {args.components} components/class)")
    counts = torch.bincount(latents.labels)
    print(f"{what}; {len(counts)} classes, {int(counts.min())}-{int(counts.max())} latents each, "
          f"d = {int(np.prod(latents.latent_shape))}")
    print(f"kmeans: niter {args.niter}, restarts {args.restarts}; kmeans-online: batch {args.km_expand} x IPC, "
          f"one pass; seed {args.seed}; threads {args.threads or 'library default'}\n")

    limit = contextlib.nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(args.threads)
    with limit:
        warm_up(latents)
        w2_head = f" {'exact W2 (' + str(args.transport_classes) + ' cl.)':>18}" if args.transport_classes else ""
        print(f"{'IPC':>4}  {'method':<18} {'quant. error':>16} {'time (s)':>9}{w2_head}")
        for ipc in args.ipc:
            common = {"ipc": ipc, "seed": args.seed, "transport_classes": args.transport_classes}
            kmeans = {"niter": args.niter, "restarts": args.restarts}
            rows = {}
            if faiss_available():
                rows["kmeans (faiss)"] = measure(latents, "kmeans", backend="faiss", **common, **kmeans)
            rows["kmeans (sklearn)"] = measure(latents, "kmeans", backend="sklearn", **common, **kmeans)
            rows["kmeans-online"] = measure(latents, "kmeans-online", km_expand=args.km_expand, **common)
            for method, r in rows.items():
                w2 = f" {r['w2']:>18.4f}" if r["w2"] is not None else ""
                print(f"{ipc:>4}  {method:<18} {r['error']:>16.4f} {r['seconds']:>9.2f}{w2}")
            online = rows["kmeans-online"]
            kmeans_rows = [m for m in rows if m != "kmeans-online"]
            ratios = ", ".join(f"{m[8:-1]} {rows[m]['error'] / online['error']:.3f}" for m in kmeans_rows)
            print(f"{'':>4}  quantization error kmeans / kmeans-online (weights aside): {ratios}")
            if online["w2"] is not None:
                ratios = ", ".join(f"{m[8:-1]} {rows[m]['w2'] / online['w2']:.3f}" for m in kmeans_rows)
                print(f"{'':>4}  exact W2 kmeans (mass weights) / kmeans-online (uniform weights): {ratios}  "
                      "(DDOQ's comparison; target <= 0.85)")
            if "kmeans (faiss)" in rows:
                ratio = rows["kmeans (faiss)"]["seconds"] / rows["kmeans (sklearn)"]["seconds"]
                print(f"{'':>4}  time faiss / sklearn: {ratio:.2f}")

if __name__ == "__main__":
    main()
