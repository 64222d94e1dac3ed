"""Choose a matching method's lr by its own objective, never by accuracy: run the method for a
few iterations at each lr with one seed (so every lr sees the same networks and real
batches) and report the mean matching loss over the last half of the iterations.

    python scripts/probe_matching_lr.py --dataset fashion_mnist --validation 0.1 --vae fit \
        --method dm --ipc 10 --lrs 0.1,1,10 --iterations 40 --param batch_real=64 --out results/lr_probe.json
    python scripts/probe_matching_lr.py --dataset imagefolder --root ~/scale/fmnist64 --image-size 64 --channels 3 \
        --resize resize --vae taesd:../shared/weights/taef2 --param embedding=latent --param init=kmeans ...
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from latentdd.config import DataConfig
from latentdd.distill import DistillContext, make_distiller
from latentdd.errors import DataError
from latentdd.io import atomic_write_json
from latentdd.pipelines.distill import LatentSpaceConfig, prepare_latent_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--root", default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--channels", type=int, default=None)
    p.add_argument("--resize", default="pad")
    p.add_argument("--validation", type=float, default=0.1)
    p.add_argument("--vae", default="fit")
    p.add_argument("--method", default="dm")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--lrs", default="0.1,1,10")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--param", action="append", default=[], help="KEY=VALUE distiller parameter")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    params = dict(kv.split("=", 1) for kv in args.param)
    data = DataConfig(name=args.dataset, root=args.root, image_size=args.image_size, channels=args.channels,
                      resize=args.resize, validation=args.validation)
    space = prepare_latent_space(data, LatentSpaceConfig(vae=args.vae), progress=False)
    rows = []
    for lr in [float(v) for v in args.lrs.split(",")]:
        distiller = make_distiller(args.method, **params, lr=lr, iterations=args.iterations, checkpoint_every=1)
        t = time.perf_counter()
        try:
            syn = distiller.distill(space.latents, args.ipc, seed=args.seed, context=DistillContext(decode=space.decode))
        except DataError as err:  # a diverging lr is a result too
            rows.append({"lr": lr, "stopped": str(err)})
            print(f"lr {lr:g}: stopped ({err})", flush=True)
            continue
        curve = syn.extras["loss_curve"]
        tail = [point["match"] for point in curve[len(curve) // 2 :]]
        rows.append({"lr": lr, "match_last_half": float(np.mean(tail)), "match_first": curve[0]["match"],
                     "seconds": time.perf_counter() - t})
        print(f"lr {lr:g}: match first {curve[0]['match']:.4g}, last half {np.mean(tail):.4g}", flush=True)
    best = min((r for r in rows if "match_last_half" in r), key=lambda r: r["match_last_half"], default=None)
    atomic_write_json(args.out, {"method": args.method, "params": params, "ipc": args.ipc, "seed": args.seed,
                                 "iterations": args.iterations, "dataset": space.record["dataset"],
                                 "vae": space.record["vae"], "rows": rows, "chosen_lr": best and best["lr"],
                                 "rule": "lowest mean matching loss over the last half of the iterations"})
    print(f"chosen lr: {best and best['lr']}")


if __name__ == "__main__":
    main()
