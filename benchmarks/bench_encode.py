"""Encode throughput (images/s) of each VAE through the latent cache, side by side.

Times `latentdd.latents.cache.encode_split` -- the code behind `latentdd encode` and the
cache of `latentdd run`: adapting the dataset's images to the VAE's input (pad / resize,
grey -> RGB), the encoder's posterior mean times the scaling factor, and writing the
safetensors shards -- on the first --images train images, into a temporary folder. Each
VAE first encodes one untimed batch (thread pools, first-call allocations). The first
VAE is the baseline of the ratio column.

    python benchmarks/bench_encode.py                              # fitted VAE vs TAEF2, 2000 images
    python benchmarks/bench_encode.py --vae fit taesd:../shared/weights/taef2 --images 5000
    python benchmarks/bench_encode.py --vae stabilityai/sd-vae-ft-mse --input-size 128

`fit` is the VAE `latentdd fit-vae` trains with its default config (cached under
--cache-dir; fitted first if missing, which takes minutes and is not timed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from latentdd.config import DataConfig
from latentdd.latents.cache import CacheConfig, encode_split
from latentdd.vae import VAEInputAdapter
from pipelines.distill import LatentSpaceConfig, load_or_fit_vae

TAEF2 = Path(__file__).resolve().parents[2] / "shared" / "weights" / "taef2"


def measure(spec: str, train, test, *, images: int, batch_size: int, cache_dir: str, input_size: int | None) -> dict:
    """-> {"vae", "latent_shape", "input", "seconds", "images_per_s"} for encoding the first `images` of `train`."""
    space = LatentSpaceConfig(vae=spec, cache_dir=cache_dir, input_size=input_size)
    vae, _ = load_or_fit_vae(space, train, test, progress=False)
    adapter = VAEInputAdapter.for_vae(vae, tuple(train.load([0]).shape[1:]))
    subset = train.subset(torch.arange(min(images, len(train))))
    encode = lambda x: vae.encode(adapter.to_vae(x))  # noqa: E731 - what prepare_latent_space passes
    encode(subset.load(torch.arange(min(batch_size, len(subset)))))  # untimed warm-up batch
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        encode_split(subset, encode, Path(tmp) / "cache", vae=vae.identity(), dataset={"name": "bench"},
                     config=CacheConfig(batch_size=batch_size), progress=False)
        seconds = time.perf_counter() - start
    return {"vae": vae.name, "latent_shape": tuple(vae.latent_shape), "input": adapter.identity()["vae_shape"],
            "seconds": seconds, "images_per_s": len(subset) / seconds}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--vae", nargs="+", help=f"VAE specs (default: fit, and taesd:{TAEF2} when present)")
    p.add_argument("--images", type=int, default=2000, help="train images encoded per VAE")
    p.add_argument("--batch-size", type=int, default=256, help="images per encoder call (latentdd's default)")
    p.add_argument("--input-size", type=int, help="VAE input side (default: the VAE's own)")
    p.add_argument("--cache-dir", default="~/.cache/latentdd", help="where `fit` VAEs are cached")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, all cores)")
    args = p.parse_args(argv)
    specs = args.vae or ["fit", *([f"taesd:{TAEF2}"] if (TAEF2 / "taef2_encoder.pth").is_file() else [])]
    if args.threads:
        torch.set_num_threads(args.threads)

    data = DataConfig(name=args.dataset)
    train, test = data.load("train"), data.load("test")
    print(f"{args.dataset}: first {min(args.images, len(train))} train images, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads\n")
    print(f"{'VAE':<36} {'input':>13} {'latent':>12} {'seconds':>8} {'images/s':>9} {'vs first':>9}")
    base = None
    for spec in specs:
        r = measure(spec, train, test, images=args.images, batch_size=args.batch_size, cache_dir=args.cache_dir,
                    input_size=args.input_size)
        base = base or r["images_per_s"]
        print(f"{r['vae'][:36]:<36} {'x'.join(map(str, r['input'])):>13} {'x'.join(map(str, r['latent_shape'])):>12} "
              f"{r['seconds']:>8.2f} {r['images_per_s']:>9.1f} {r['images_per_s'] / base:>8.2f}x")


if __name__ == "__main__":
    main()
