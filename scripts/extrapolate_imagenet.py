"""Extrapolate the measured per-stage costs of the 64 px TAEF2 flow to ImageNet-1K (issue 14).

Inputs are what latentdd measured, never typed-in timings:
- --scale: `benchmarks/bench_scale.py`'s JSON (encode under P processes; kmeans at IPC 10 on 10 classes);
- --run: a `latentdd run` folder of the 1000-class flow (results/scale_proc1000/recipe.yaml): the
  set's `distill.json` stage seconds (one-process encode, kmeans over 1000 classes, VAE render) and the
  evaluation reports (seconds per training, epochs, images);
- --diffusion: the `render.json` of `latentdd render --decoder diffusion` on the same set (prior fit
  seconds and steps, render seconds).

Costs scale as follows (N images, K classes, IPC, E epochs):
- encode: seconds per image x N;
- kmeans: a x K + b x N x IPC, a and b solved from the two measured points (1000 classes at IPC 1, and
  the scale bench's largest N at its IPC): faiss's Lloyd iterations cost N x IPC distance rows, plus a
  per-class overhead;
- render: seconds per rendered image x K x IPC (VAE decoder; diffusion img2img with its steps);
- the prior's fit: fixed by its step count, not by N (a longer fit is a choice, not a cost of N);
- evaluate: seconds per image-epoch x K x IPC x E for one training of ConvNet-4 at 64 px, plus the
  forward pass over the held-out images.

The GPU column is NOT measured (no GPU here): the FLOPs of each stage (counted by
torch.utils.flop_counter on the real modules) over an ASSUMED sustained rate, --gpu-tflops, which a GPU
run should replace. kmeans's FLOPs are 2 x N x IPC x d per Lloyd iteration.

    python scripts/extrapolate_imagenet.py --scale results/benchmarks/bench_scale_fmnist64_10k_60k.json \\
        --run results/scale_proc1000 --diffusion results/scale_proc1000/diffusion/render.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAEF2 = REPO.parent / "shared" / "weights" / "taef2"


def flops(fn) -> float:
    """FLOPs of one call of fn() (torch's counter: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def model_flops(vae_spec: str, classes: int, size: int, latent_shape: tuple[int, int, int]) -> dict:
    """FLOPs per image of encode, VAE decode, one prior UNet call, and one ConvNet training step."""
    import torch
    from diffusers import UNet2DModel

    from latentdd.nn.convnet import build_model
    from latentdd.prior.fit import FitPriorConfig
    from latentdd.vae import load_vae

    vae = load_vae(vae_spec)
    x = torch.rand(1, 3, size, size)
    z = torch.randn(1, *latent_shape)
    unet = UNet2DModel(**FitPriorConfig().unet_config(latent_shape, classes))
    net = build_model("convnet", 3, classes, size)  # ConvNet-4 at 64 px
    with torch.no_grad():
        out = {"encode": flops(lambda: vae.encode(x)), "decode": flops(lambda: vae.decode(z)),
               "unet_call": flops(lambda: unet(z, torch.tensor([10]), class_labels=torch.tensor([0]))),
               "test_forward": flops(lambda: net(x))}
    out["train_step"] = flops(lambda: net(x).logsumexp(1).sum().backward())  # forward + backward
    return out


def measured(scale: dict, run: Path, diffusion: dict) -> dict:
    """Per-unit seconds from the records."""
    rows = {(r["n"], r["stage"]): r for r in scale["rows"]}
    n_max = max(n for n, _ in rows)
    distill = json.loads(next(run.glob("kmeans_ipc*/distill.json")).read_text())
    stage = distill["record"]["stage_seconds"]
    train_images = int(distill["record"]["dataset"]["train_split"].split("(")[1].split()[0])
    classes, ipc = len(distill["extras"]["quantization_error"]), distill["ipc"]
    reports = [json.loads(p.read_text()) for p in sorted((run / "reports").glob("*.json"))]
    epochs = reports[0]["record"]["evaluator"]["epochs"]
    per_training = [s for r in reports for s in r["train_seconds"]]
    per_wall = [r["wall_seconds"] / len(r["train_seconds"]) for r in reports]
    held_out = int(distill["record"]["dataset"]["test_split"].split("(")[1].split()[0])
    # kmeans: t = a * K + b * N * IPC through the 1000-class point and the bench's largest N (10 classes).
    bench = rows[(n_max, "distill")]
    k1, x1, t1 = classes, train_images * ipc, stage["distill"]
    k2, x2, t2 = bench["classes"], bench["images"] * scale["config"]["ipc"], bench["seconds"]
    b = (t2 - t1 * k2 / k1) / (x2 - x1 * k2 / k1)
    a = (t1 - b * x1) / k1
    render_images = classes * ipc
    return {
        "encode_1p": stage["encode"] / train_images,
        "encode_np": rows[(n_max, "encode")]["seconds_per_image"], "processes": scale["config"]["processes"],
        "kmeans_per_class": a, "kmeans_per_row": b,
        "render_vae": stage["render"] / render_images, "render_diffusion": diffusion["seconds"] / render_images,
        "prior_fit": diffusion["record"]["decoder"]["prior_fit"]["train_seconds"],
        "prior_steps": diffusion["record"]["decoder"]["prior_fit"]["steps"],
        "denoising_steps": diffusion["record"]["decoder"]["denoising_steps"],
        "guidance": diffusion["record"]["decoder"]["guidance_scale"] != 1.0,
        "image_epoch": sum(per_training) / len(per_training) / (render_images * epochs),
        "test_image": (sum(per_wall) / len(per_wall) - sum(per_training) / len(per_training)) / held_out,
        "measured_on": {"classes": classes, "train_images": train_images, "ipc": ipc, "epochs": epochs,
                        "held_out": held_out, "bench_n": n_max},
    }


def table(m: dict, f: dict, *, images: int, classes: int, ipcs: list[int], epochs: int, held_out: int,
          tflops: float, kmeans_iters: int, d: int) -> tuple[list[dict], str]:
    rate = tflops * 1e12
    rows = []
    unet_per_image = f["unet_call"] * m["denoising_steps"] * (2 if m["guidance"] else 1)
    rows.append({"stage": "encode (1 process)", "cpu_s": m["encode_1p"] * images, "gpu_s": f["encode"] * images / rate})
    rows.append({"stage": f"encode ({m['processes']} processes)", "cpu_s": m["encode_np"] * images, "gpu_s": None})
    for ipc in ipcs:
        n_syn = classes * ipc
        kmeans_flops = 2.0 * images * ipc * d * kmeans_iters
        rows += [
            {"stage": f"kmeans, IPC {ipc}", "cpu_s": m["kmeans_per_class"] * classes + m["kmeans_per_row"] * images * ipc,
             "gpu_s": kmeans_flops / rate},
            {"stage": f"render VAE, IPC {ipc}", "cpu_s": m["render_vae"] * n_syn, "gpu_s": f["decode"] * n_syn / rate},
            {"stage": f"render diffusion, IPC {ipc}", "cpu_s": m["render_diffusion"] * n_syn,
             "gpu_s": (unet_per_image + f["decode"]) * n_syn / rate},
            {"stage": f"evaluate ConvNet-4, IPC {ipc}, {epochs} epochs, 1 training",
             "cpu_s": m["image_epoch"] * n_syn * epochs + m["test_image"] * held_out,
             "gpu_s": (f["train_step"] * n_syn * epochs + f["test_forward"] * held_out) / rate},
        ]
    rows.append({"stage": f"prior fit ({m['prior_steps']} steps, fixed)", "cpu_s": m["prior_fit"], "gpu_s": None})
    lines = [f"| stage ({images:,} images, {classes} classes) | these CPU cores, from measured costs (one core "
             f"unless {m['processes']} processes) | one GPU: FLOPs at an assumed {tflops:g} TFLOP/s, not measured "
             "(likely optimistic: small kernels rarely sustain it) |", "|---|---|---|"]
    for r in rows:
        gpu = "" if r["gpu_s"] is None else _human(r["gpu_s"])
        lines.append(f"| {r['stage']} | {_human(r['cpu_s'])} | {gpu} |")
    return rows, "\n".join(lines)


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", required=True, help="bench_scale.py's JSON")
    p.add_argument("--run", required=True, help="the 1000-class `latentdd run` folder (kmeans_ipc*/distill.json, reports/)")
    p.add_argument("--diffusion", required=True, help="render.json of the diffusion render of the same set")
    p.add_argument("--vae", default=f"taesd:{TAEF2}")
    p.add_argument("--images", type=int, default=1_281_167, help="ImageNet-1K's train images")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--held-out", type=int, default=50_000, help="images scored after each training")
    p.add_argument("--ipc", type=int, nargs="+", default=[10, 50])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--gpu-tflops", type=float, default=20.0, help="ASSUMED sustained FLOP rate of one GPU")
    p.add_argument("--out", help="JSON report (default: print only)")
    args = p.parse_args(argv)

    scale = json.loads(Path(args.scale).read_text())
    m = measured(scale, Path(args.run), json.loads(Path(args.diffusion).read_text()))
    size = scale["config"]["image_size"]
    latent_shape = (32, size // 8, size // 8)
    f = model_flops(args.vae, args.classes, size, latent_shape)
    d = latent_shape[0] * latent_shape[1] * latent_shape[2]
    rows, text = table(m, f, images=args.images, classes=args.classes, ipcs=args.ipc, epochs=args.epochs,
                       held_out=args.held_out, tflops=args.gpu_tflops, kmeans_iters=100, d=d)
    print("measured per unit:", json.dumps({k: v for k, v in m.items() if k != "measured_on"}))
    print("FLOPs per image:", json.dumps({k: f"{v / 1e9:.3f} G" for k, v in f.items()}))
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"measured": m, "flops": f, "rows": rows, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
