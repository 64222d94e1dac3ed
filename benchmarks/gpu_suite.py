"""Issue 36's GPU suite: what latentdd's stages cost on one GPU, each figure beside the same measurement on this
machine's CPU in the same run; writes OUT/gpu_suite.json and OUT/gpu_suite.md (the table, made from the JSON).

    bash benchmarks/gpu_suite.sh OUT                      # on a GPU machine: under 8 minutes
    python benchmarks/gpu_suite.py --out OUT --budget quick   # anywhere, tiny budgets (the CPU alone without a GPU)

Rows (each after untimed warm-up work: allocations, cuDNN's autotuning, faiss's first index):
- evaluator epochs per second at IPC 10 of 10 classes (100 images), under `dsa` and under `soft` (the teacher a
  ConvNet of width 128, the strong preset's architecture, labelling every batch): ConvNet-3 at 28 px (1 channel),
  ConvNet-4 and ResNet-18 at 64 px (3 channels). The images are random: a training's time does not depend on its
  pixels.
- TAEF2 encode, images per second (64 px RGB, batches of 256), with --taef2 weights (the row says why it is
  missing without them).
- DM seconds per iteration at IPC 10, real batch 256 a class, in the latent space (4x8x8) and through the decoder
  (pixel embedding): a randomly initialised VAE of `latentdd fit-vae`'s default architecture, which costs what a
  fitted one does.
- kmeans on faiss-gpu against faiss-cpu (backend faiss-gpu / faiss-cpu): 10 classes of 6000 latents of 256
  dimensions, IPC 10.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latentdd.errors import DataError  # noqa: E402

TAEF2 = REPO.parent / "shared" / "weights" / "taef2"
# (model, image side, channels): the Fashion-MNIST student, the ImageNet-subset protocol's (ConvNet-4 at 64 px,
# what scripts/extrapolate_imagenet.py scales) and ResNet-18
EVALUATOR_MODELS = [("convnet", 28, 1), ("convnet", 64, 3), ("resnet18", 64, 3)]
# Work per measurement: (GPU, CPU) epochs, iterations or images. "full" keeps the suite under 8 minutes on one
# GPU beside a 16-core CPU; "quick" only checks that every row runs.
BUDGETS = {
    "full": {"ipc": 10, "epochs": (30, 3), "dm_iterations": (10, 2), "batch_real": 256, "latents_per_class": 6000,
             "encode_images": (4096, 512)},
    "quick": {"ipc": 2, "epochs": (2, 1), "dm_iterations": (2, 1), "batch_real": 16, "latents_per_class": 60,
              "encode_images": (16, 8)},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluator_epochs_per_second(device: torch.device, *, model: str, size: int, channels: int, protocol: str,
                                ipc: int, epochs: int) -> float:
    from latentdd.evaluate import EvalConfig, train_model
    from latentdd.nn.convnet import ConvNet

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(10 * ipc, channels, size, size, generator=gen)
    labels = torch.arange(10 * ipc) % 10
    mean, std = torch.full((channels,), 0.5), torch.full((channels,), 0.25)
    teacher = None
    if protocol == "soft":
        depth = 3 if size <= 32 else 4
        net = ConvNet(channels, 10, size, width=128, depth=depth).to(device).eval()
        teacher = lambda x: net((x - 0.5) / 0.25)  # noqa: E731
    extra = {"depth": 3 if size <= 32 else 4} if model == "convnet" else {}

    def train(n: int) -> float:
        config = EvalConfig.preset(protocol, model=model, epochs=n, compile="off", **extra)
        _sync(device)
        t0 = time.perf_counter()
        train_model(images, labels, num_classes=10, config=config, mean=mean, std=std, seed=0, teacher=teacher,
                    device=device)
        _sync(device)
        return time.perf_counter() - t0

    train(1)  # warm-up
    return epochs / train(epochs)


def encode_images_per_second(device: torch.device, *, weights: Path, images: int) -> float:
    from latentdd.vae import load_vae

    if not (weights / "taef2_encoder.pth").is_file():
        raise DataError(f"no TAEF2 weights in {weights} (--taef2)")
    vae = load_vae(f"taesd:{weights}", input_size=64, device=device)
    batch = min(256, images)
    x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        vae.encode(x)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(images // batch):
            vae.encode(x)
        _sync(device)
    return images // batch * batch / (time.perf_counter() - t0)


def dm_seconds_per_iteration(device: torch.device, *, embedding: str, ipc: int, batch_real: int, per_class: int,
                             iterations: int) -> float:
    from latentdd.distill import DistillContext, make_distiller
    from latentdd.latents.types import Latents
    from latentdd.vae import FitVAEConfig, VAEInputAdapter
    from latentdd.vae.diffusers_kl import DiffusersKL

    gen = torch.Generator().manual_seed(0)
    n = 10 * per_class
    latents = Latents(torch.randn(n, 4, 8, 8, generator=gen), torch.arange(n) % 10, [str(k) for k in range(10)])
    config = FitVAEConfig()
    vae = DiffusersKL.from_config(config.diffusers_config(1), name="suite", input_size=config.image_size,
                                  input_resize=config.resize).to(device)
    adapter = VAEInputAdapter.for_vae(vae, (1, 28, 28))
    context = DistillContext(decode=lambda z: adapter.from_vae(vae.decode(z)), device=device)
    dm = make_distiller("dm", embedding=embedding, iterations=1 + iterations, batch_real=batch_real,
                        checkpoint_every=1)  # a curve point after every iteration
    curve = dm.distill(latents, ipc, seed=0, context=context).extras["loss_curve"]
    return (curve[-1]["seconds"] - curve[0]["seconds"]) / iterations  # the first iteration is the warm-up


def kmeans_seconds(backend: str, *, ipc: int, per_class: int) -> float:
    from latentdd.distill import make_distiller
    from latentdd.latents.types import Latents

    gen = torch.Generator().manual_seed(0)
    n = 10 * per_class
    latents = Latents(torch.randn(n, 256, 1, 1, generator=gen), torch.arange(n) % 10, [str(k) for k in range(10)])
    kmeans = make_distiller("kmeans", backend=backend)
    kmeans.distill(Latents(latents.latents[:200], latents.labels[:200], latents.class_names), 2, seed=0)  # warm-up
    t0 = time.perf_counter()
    kmeans.distill(latents, ipc, seed=0)
    return time.perf_counter() - t0


def measure(fn, *args, **kwargs) -> dict:
    """{"value": fn(...)} or {"missing": why} when it cannot run here (a DataError, no GPU, a library missing)."""
    try:
        return {"value": float(fn(*args, **kwargs))}
    except (DataError, ImportError, RuntimeError) as err:
        return {"missing": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}


def rows(budget: dict, gpu: torch.device | None, taef2: Path) -> list[dict]:
    cpu = torch.device("cpu")
    no_gpu = {"missing": "no CUDA device"}

    def pair(stage: str, setting: str, unit: str, higher: bool, fn, gpu_kwargs: dict, cpu_kwargs: dict,
             work: dict | None = None) -> dict:
        print(f"{stage} {setting} ...", flush=True)
        row = {"stage": stage, "setting": setting, "unit": unit, "higher_is_better": higher, "work": work or {},
               "gpu": measure(fn, gpu, **gpu_kwargs) if gpu is not None else no_gpu, "cpu": measure(fn, cpu, **cpu_kwargs)}
        return row

    ipc, g, c = budget["ipc"], *budget["epochs"]
    out = []
    for model, size, channels in EVALUATOR_MODELS:
        for protocol in ("dsa", "soft"):
            setting = f"{model} {size} px, {protocol}, IPC {ipc}"
            common = {"model": model, "size": size, "channels": channels, "protocol": protocol, "ipc": ipc}
            out.append(pair("evaluator", setting, "epochs/s", True, evaluator_epochs_per_second,
                            {**common, "epochs": g}, {**common, "epochs": c},
                            work={"model": model, "size": size, "protocol": protocol, "images": 10 * ipc}))
    g, c = budget["encode_images"]
    out.append(pair("encode", "TAEF2, 64 px RGB, batch 256", "images/s", True, encode_images_per_second,
                    {"weights": taef2, "images": g}, {"weights": taef2, "images": c}))
    g, c = budget["dm_iterations"]
    per_class, batch = budget["latents_per_class"], budget["batch_real"]
    for embedding in ("latent", "pixel"):
        common = {"embedding": embedding, "ipc": ipc, "batch_real": batch, "per_class": per_class}
        out.append(pair("distill", f"DM, {embedding} embedding, IPC {ipc}, real batch {batch}", "s/iteration",
                        False, dm_seconds_per_iteration, {**common, "iterations": g}, {**common, "iterations": c}))
    print("kmeans ...", flush=True)
    common = {"ipc": ipc, "per_class": per_class}
    out.append({"stage": "distill", "setting": f"kmeans, 10 x {per_class} latents of 256 dims, IPC {ipc}",
                "unit": "s", "higher_is_better": False, "work": {"method": "kmeans", "latents": 10 * per_class, "ipc": ipc},
                "gpu": measure(kmeans_seconds, "faiss-gpu", **common) if gpu is not None else no_gpu,
                "cpu": measure(kmeans_seconds, "faiss-cpu", **common)})
    for row in out:  # how many times faster the GPU is
        gv, cv = row["gpu"].get("value"), row["cpu"].get("value")
        row["gpu_speedup"] = None if gv is None or cv is None else (gv / cv if row["higher_is_better"] else cv / gv)
    return out


def table(report: dict) -> str:
    m = report["machine"]
    lines = [f"GPU: {m['gpu'] or 'none'}; CPU: {m['cpu']} ({m['cpu_threads']} torch threads); torch {m['torch']}; "
             f"budget {report['budget']}. Written by benchmarks/gpu_suite.py from gpu_suite.json.", "",
             "| stage | setting | unit | GPU | CPU | GPU speedup |", "|---|---|---|---|---|---|"]
    show = lambda r: f"{r['value']:.3g}" if "value" in r else f"missing ({r['missing']})"  # noqa: E731
    for r in report["rows"]:
        speedup = f"{r['gpu_speedup']:.1f}x" if r["gpu_speedup"] is not None else ""
        lines.append(f"| {r['stage']} | {r['setting']} | {r['unit']} | {show(r['gpu'])} | {show(r['cpu'])} | {speedup} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.md")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    p.add_argument("--taef2", type=Path, default=TAEF2, help="TAEF2 weights folder (taef2_encoder.pth)")
    args = p.parse_args(argv)
    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    t0 = time.perf_counter()
    report = {"budget": args.budget, "machine": {
        "gpu": torch.cuda.get_device_name(0) if gpu is not None else None, "cpu": platform.processor() or
        platform.machine(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__}}
    report["rows"] = rows(BUDGETS[args.budget], gpu, args.taef2)
    report["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_suite.md").write_text(table(report))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
