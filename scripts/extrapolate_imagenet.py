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

The one-GPU column: where `benchmarks/gpu_suite.py`'s JSON (--gpu-suite) holds a GPU figure for the stage
(encode images/s, ConvNet-4 at 64 px epochs/s, faiss-gpu kmeans seconds), that figure scaled by what the stage
grows with; otherwise the FLOPs of the stage (torch.utils.flop_counter on the real modules; kmeans 2 x N x IPC x
d a Lloyd iteration) over an ASSUMED sustained rate, --gpu-tflops.

The N-GPU column (--gpus): the one-GPU figure over N x the stage's parallel efficiency (speedup / processes)
measured on P CPU processes by `benchmarks/bench_parallel.py` (--parallel: one training split over the
processes; a table's trainings dealt to them) and `benchmarks/bench_distill_processes.py` (--distill-processes:
kmeans split by class), and bench_scale's P-process encode. That the efficiency measured on P CPU processes
holds on N GPUs is an assumption, and so marked; a stage with no measured efficiency is left out.

Every figure carries its source: m (a measured per-unit cost, scaled), a (an assumed rate or efficiency).

    python scripts/extrapolate_imagenet.py --scale results/benchmarks/bench_scale_fmnist64_10k_60k.json \\
        --run results/scale_proc1000 --diffusion results/scale_proc1000/diffusion/render.json \\
        --parallel results/parallel_fashion_mnist/bench.json \\
        --distill-processes results/parallel_fashion_mnist/distill_processes.json --gpus 8
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


def efficiencies(m: dict, parallel: dict | None = None, distill: dict | None = None) -> dict[str, dict]:
    """Parallel efficiency (speedup / processes) of each stage kind on P CPU processes, from the records: encode
    (bench_scale's P-process encode against the run's one-process encode), evaluate (one training split over the
    processes) and table (a table's trainings dealt to them; bench_parallel), kmeans (split by class;
    bench_distill_processes)."""
    p = m["processes"]
    eff = {"encode": {"value": m["encode_1p"] / m["encode_np"] / p, "processes": p}}
    if parallel is not None:
        p = parallel["processes"]
        eff["evaluate"] = {"value": parallel["one_training"]["speedup"] / p, "processes": p}
        if "run_table" in parallel:
            eff["table"] = {"value": parallel["run_table"]["trainings_speedup"] / p, "processes": p}
    for row in (distill or {}).get("rows", []):
        if row["method"] == "kmeans" and "speedup" in row:
            eff["kmeans"] = {"value": row["speedup"] / row["processes"], "processes": row["processes"]}
    return eff


def gpu_rates(suite: dict) -> dict:
    """Per-unit GPU seconds that gpu_suite.py measured (rows with a GPU value): encode a image, a ConvNet-4 image-epoch
    at 64 px (dsa; measured on a small set, so an upper bound at ImageNet's batch sizes), a kmeans row (N x IPC)."""
    out = {"device": suite["machine"].get("gpu")}
    for row in suite["rows"]:
        value, work = row["gpu"].get("value"), row.get("work", {})
        if value is None:
            continue
        if row["stage"] == "encode":
            out["encode"] = 1.0 / value
        elif row["stage"] == "evaluator" and (work.get("model"), work.get("size"), work.get("protocol")) == ("convnet", 64, "dsa"):
            out["image_epoch"] = 1.0 / (value * work["images"])
        elif work.get("method") == "kmeans":
            out["kmeans_row"] = value / (work["latents"] * work["ipc"])
    return out


def table(m: dict, f: dict, *, images: int, classes: int, ipcs: list[int], epochs: int, held_out: int,
          tflops: float, kmeans_iters: int, d: int, eff: dict | None = None, rates: dict | None = None,
          gpus: int = 8, table_trainings: int = 17) -> tuple[list[dict], str]:
    """The per-stage table: these CPU cores (measured per-unit costs, scaled), one GPU (gpu_suite's measured rates
    where given, else FLOPs at the assumed `tflops`) and `gpus` GPUs (one GPU's over gpus x the stage's measured
    efficiency `eff`). Each figure's source: m measured (scaled), a assumed."""
    rate, eff, rates = tflops * 1e12, eff or {}, rates or {}

    def gpu(unit: str, per_unit_flops: float, count: float) -> tuple[float, str]:
        return (rates[unit] * count, "m") if unit in rates else (per_unit_flops * count / rate, "a")

    rows = []

    def add(stage: str, cpu_s: float, one: tuple[float, str] | None, kind: str | None):
        row = {"stage": stage, "cpu_s": cpu_s, "gpu_s": None, "gpu_src": None, "ngpu_s": None}
        if one is not None:
            row["gpu_s"], row["gpu_src"] = one
            if kind in eff:
                row["ngpu_s"] = row["gpu_s"] / (gpus * eff[kind]["value"])
        rows.append(row)

    unet_per_image = f["unet_call"] * m["denoising_steps"] * (2 if m["guidance"] else 1)
    add("encode (1 process)", m["encode_1p"] * images, gpu("encode", f["encode"], images), "encode")
    add(f"encode ({m['processes']} processes)", m["encode_np"] * images, None, None)
    for ipc in ipcs:
        n_syn = classes * ipc
        train_s, train_src = gpu("image_epoch", f["train_step"], n_syn * epochs)
        one = (train_s + f["test_forward"] * held_out / rate, train_src)  # the held-out pass: FLOPs, assumed rate
        add(f"kmeans, IPC {ipc}", m["kmeans_per_class"] * classes + m["kmeans_per_row"] * images * ipc,
            gpu("kmeans_row", 2.0 * d * kmeans_iters, images * ipc), "kmeans")
        add(f"render VAE, IPC {ipc}", m["render_vae"] * n_syn, gpu("decode", f["decode"], n_syn), None)
        add(f"render diffusion, IPC {ipc}", m["render_diffusion"] * n_syn,
            gpu("diffusion", unet_per_image + f["decode"], n_syn), None)
        cpu_one = m["image_epoch"] * n_syn * epochs + m["test_image"] * held_out
        add(f"evaluate ConvNet-4, IPC {ipc}, {epochs} epochs, 1 training", cpu_one, one, "evaluate")
        add(f"evaluate, IPC {ipc}: a table of {table_trainings} trainings", cpu_one * table_trainings,
            (one[0] * table_trainings, one[1]), "table")
    add(f"prior fit ({m['prior_steps']} steps, fixed)", m["prior_fit"], None, None)

    device = rates.get("device") or "one GPU"
    measured_on = ", ".join(f"{k} {v['value']:.2f} on {v['processes']} processes" for k, v in eff.items())
    lines = [f"| stage ({images:,} images, {classes} classes) | these CPU cores, one core unless {m['processes']} "
             f"processes | {device}: m = gpu_suite's measured rate, a = FLOPs at an assumed {tflops:g} TFLOP/s "
             f"| {gpus} GPUs: one GPU's over {gpus} x the efficiency measured on CPU processes (assumed to hold) |",
             "|---|---|---|---|"]
    for r in rows:
        one = "" if r["gpu_s"] is None else f"{_human(r['gpu_s'])} ({r['gpu_src']})"
        many = "" if r["ngpu_s"] is None else f"{_human(r['ngpu_s'])} (a)"
        lines.append(f"| {r['stage']} | {_human(r['cpu_s'])} (m) | {one} | {many} |")
    lines += ["", f"Parallel efficiency (speedup / processes) measured on CPU processes: {measured_on or 'none given'}."]
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
    p.add_argument("--gpu-suite", help="benchmarks/gpu_suite.py's gpu_suite.json: measured GPU rates replace FLOPs")
    p.add_argument("--parallel", help="benchmarks/bench_parallel.py's JSON (evaluation's efficiency on P processes)")
    p.add_argument("--distill-processes", help="benchmarks/bench_distill_processes.py's JSON (kmeans's efficiency)")
    p.add_argument("--gpus", type=int, default=8, help="the N-GPU column's N")
    p.add_argument("--table-trainings", type=int, default=17,
                   help="trainings in a results table (default 4 sets x 3 + 5 random-real subsets)")
    p.add_argument("--out", help="JSON report (default: print only)")
    args = p.parse_args(argv)

    scale = json.loads(Path(args.scale).read_text())
    m = measured(scale, Path(args.run), json.loads(Path(args.diffusion).read_text()))
    size = scale["config"]["image_size"]
    latent_shape = (32, size // 8, size // 8)
    f = model_flops(args.vae, args.classes, size, latent_shape)
    d = latent_shape[0] * latent_shape[1] * latent_shape[2]
    read = lambda path: json.loads(Path(path).read_text()) if path else None  # noqa: E731
    eff = efficiencies(m, read(args.parallel), read(args.distill_processes))
    rates = gpu_rates(read(args.gpu_suite)) if args.gpu_suite else None
    rows, text = table(m, f, images=args.images, classes=args.classes, ipcs=args.ipc, epochs=args.epochs,
                       held_out=args.held_out, tflops=args.gpu_tflops, kmeans_iters=100, d=d, eff=eff, rates=rates,
                       gpus=args.gpus, table_trainings=args.table_trainings)
    print("measured per unit:", json.dumps({k: v for k, v in m.items() if k != "measured_on"}))
    print("FLOPs per image:", json.dumps({k: f"{v / 1e9:.3f} G" for k, v in f.items()}))
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"measured": m, "flops": f, "efficiency": eff, "gpu_rates": rates,
                                              "rows": rows, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
