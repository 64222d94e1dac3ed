"""Encode throughput (images/s) of each VAE through the latent cache, side by side.

Times `latentdd.latents.cache.encode_split` -- the code behind `latentdd encode` and the
cache of `latentdd run`: adapting the dataset's images to the VAE's input (pad / resize,
grey -> RGB), the encoder's posterior mean times the scaling factor, and writing the
safetensors shards -- on the first --images train images, into a temporary folder. Each
VAE first encodes one untimed batch (thread pools, first-call allocations). The first
VAE is the baseline of the "vs first" column.

--raw also times the model's bare forward (`encode_unscaled`) on the same images, already
decoded, adapted and in memory, in batches of the same size: "vs raw" is the pipeline's
images/s over the forward's, the share of the VAE's speed that the pipeline keeps.
--root encodes an image folder (`--dataset imagefolder`, e.g. from
scripts/make_scale_fixture.py), streamed from disk as `latentdd encode` does, so the PNG
decoding is timed too.

    python benchmarks/bench_encode.py                              # fitted VAE vs TAEF2, 2000 images
    python benchmarks/bench_encode.py --vae fit taesd:../shared/weights/taef2 --images 5000
    python benchmarks/bench_encode.py --vae stabilityai/sd-vae-ft-mse --input-size 128
    python benchmarks/bench_encode.py --dataset imagefolder --root ~/scale/fmnist64 --image-size 64 \
        --vae taesd:../shared/weights/taef2 --images 5000 --raw          # the issue-14 ratio

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
from latentdd.data.base import split_rows
from latentdd.latents.cache import CacheConfig, encode_split
from latentdd.vae import VAEInputAdapter
from latentdd.pipelines.distill import LatentSpaceConfig, load_or_fit_vae

TAEF2 = Path(__file__).resolve().parents[2] / "shared" / "weights" / "taef2"


def measure(spec: str, train, test, *, images: int, batch_size: int, cache_dir: str, input_size: int | None,
            raw: bool = False, workers: int = 0) -> dict:
    """-> {"vae", "latent_shape", "input", "seconds", "images_per_s"[, "raw_images_per_s"]} for encoding the
    first `images` of `train` (and, with `raw`, for the bare forward on them)."""
    space = LatentSpaceConfig(vae=spec, cache_dir=cache_dir, input_size=input_size)
    vae, _ = load_or_fit_vae(space, train, test, progress=False)
    adapter = VAEInputAdapter.for_vae(vae, tuple(train.load([0]).shape[1:]))
    subset = split_rows(train, torch.arange(min(images, len(train))), "train")  # streamed if train is
    encode = lambda x: vae.encode(adapter.to_vae(x))  # noqa: E731 - what prepare_latent_space passes
    with torch.inference_mode():
        encode(subset.load(torch.arange(min(batch_size, len(subset)))))  # untimed warm-up batch
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        encode_split(subset, encode, Path(tmp) / "cache", vae=vae.identity(), dataset={"name": "bench"},
                     config=CacheConfig(batch_size=batch_size, workers=workers), progress=False)
        seconds = time.perf_counter() - start
    result = {"vae": vae.name, "latent_shape": tuple(vae.latent_shape), "input": adapter.identity()["vae_shape"],
              "seconds": seconds, "images_per_s": len(subset) / seconds}
    if raw:
        result["raw_images_per_s"] = raw_forward_rate(vae, adapter, subset, batch_size)
    return result


def raw_forward_rate(vae, adapter, data, batch_size: int) -> float:
    """Images/s of vae.encode_unscaled alone on `data`, decoded and adapted beforehand, `batch_size` at a time."""
    x = torch.cat([adapter.to_vae(data.load(torch.arange(s, min(s + batch_size, len(data)))))
                   for s in range(0, len(data), batch_size)]).to(vae.device)  # (n, C, S, S) in [0, 1]
    with torch.inference_mode():
        vae.encode_unscaled(x[:batch_size], False, None)  # untimed warm-up, as for the pipeline
        start = time.perf_counter()
        for s in range(0, len(x), batch_size):
            vae.encode_unscaled(x[s : s + batch_size], False, None)
        if x.is_cuda:
            torch.cuda.synchronize()
        return len(x) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--root", help="the dataset's folder (for imagefolder: train/ and val/ inside)")
    p.add_argument("--image-size", type=int, help="dataset images resized to this side (imagefolder: skips the "
                                                  "size scan of every file)")
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--raw", action="store_true", help="also time the bare forward: the 'vs raw' column")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes decoding images (--encode-workers)")
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

    data = DataConfig(name=args.dataset, root=args.root, image_size=args.image_size, channels=args.channels,
                      resize="resize" if args.image_size else DataConfig.resize)
    train, test = data.load("train"), data.load("test")
    print(f"{args.dataset}: first {min(args.images, len(train))} train images, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads\n")
    raw_header = f" {'raw img/s':>9} {'vs raw':>7}" if args.raw else ""
    print(f"{'VAE':<36} {'input':>13} {'latent':>12} {'seconds':>8} {'images/s':>9} {'vs first':>9}{raw_header}")
    base = None
    for spec in specs:
        r = measure(spec, train, test, images=args.images, batch_size=args.batch_size, cache_dir=args.cache_dir,
                    input_size=args.input_size, raw=args.raw, workers=args.workers)
        base = base or r["images_per_s"]
        raw = f" {r['raw_images_per_s']:>9.1f} {r['images_per_s'] / r['raw_images_per_s']:>7.2f}" if args.raw else ""
        print(f"{r['vae'][:36]:<36} {'x'.join(map(str, r['input'])):>13} {'x'.join(map(str, r['latent_shape'])):>12} "
              f"{r['seconds']:>8.2f} {r['images_per_s']:>9.1f} {r['images_per_s'] / base:>8.2f}x{raw}")


if __name__ == "__main__":
    main()
