"""Rendering cost per image, VAE decoding against the diffusion decoder, and how class-like the images are.

Renders the k-means centroids of the cached latents (IPC --ipc per class, as `latentdd
run` distils them) with plain VAE decoding (the baseline of the ratio column) and with
the diffusion decoder at each --strengths (guidance --guidance, --steps DDIM steps).
Strength 1 starts from pure noise: those images are samples of the prior, so their class
consistency says whether the prior's samples are recognisably of their class. Class
consistency is the share of images that the judge (`latentdd.evaluate.consistency`, a
ConvNet trained on the real train split; trained first if not cached, untimed) calls
their class. The prior and the VAE are fitted first if missing (untimed). Each decoder
renders the set once, untimed, before the timed render.

    python benchmarks/bench_render.py                      # fashion_mnist, IPC 10, strengths 0.5 0.7 0.9 1
    python benchmarks/bench_render.py --strengths 0.7 --guidance 1.5 --ipc 50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from latentdd.config import DataConfig
from latentdd.distill import make_distiller
from latentdd.evaluate.consistency import JudgeConfig, class_consistency, fit_judge
from latentdd.pipelines.distill import DecoderConfig, LatentSpaceConfig, make_decoder, prepare_latent_space


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.7, 0.9, 1.0])
    p.add_argument("--guidance", type=float, default=DecoderConfig.guidance_scale)
    p.add_argument("--steps", type=int, default=DecoderConfig.num_inference_steps)
    p.add_argument("--cache-dir", default="~/.cache/latentdd")
    args = p.parse_args(argv)

    space = prepare_latent_space(DataConfig(name=args.dataset), LatentSpaceConfig(cache_dir=args.cache_dir),
                                 progress=False)
    judge = fit_judge(space.train, space.test, JudgeConfig(), Path(args.cache_dir).expanduser() / "judge")
    synthetic = make_distiller("kmeans").distill(space.latents, args.ipc, seed=0)
    settings = [("vae", DecoderConfig())] + [
        (f"diffusion s={s:g} g={args.guidance:g}", DecoderConfig(name="diffusion", strength=s,
                                                                   guidance_scale=args.guidance,
                                                                   num_inference_steps=args.steps))
        for s in args.strengths]
    print(f"{args.dataset}: {len(synthetic)} k-means latents {tuple(space.latents.latent_shape)}, "
          f"{torch.get_num_threads()} threads; judge {judge.report['name']} "
          f"(test accuracy {judge.report['test_accuracy']:.2f}%)\n")
    print(f"{'decoder':<28}{'ms/image':>10}{'vs first':>10}{'class consistency %':>22}")
    first = None
    for name, config in settings:
        decoder, _ = make_decoder(config, space, args.cache_dir, progress=False)
        decoder.render(synthetic, seed=0)  # warm-up
        start = time.perf_counter()
        images = decoder.render(synthetic, seed=0)
        ms = 1000 * (time.perf_counter() - start) / len(synthetic)
        first = first or ms
        share = class_consistency(judge, images.images, images.labels)["share"]
        print(f"{name:<28}{ms:>10.2f}{ms / first:>9.1f}x{share:>22.1f}")


if __name__ == "__main__":
    main()
