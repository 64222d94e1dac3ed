"""The `latentdd` command: datasets, baseline, evaluate, calibrate.

Settings come from dataclass defaults, then a YAML file (--config), then flags; the
resolved settings are saved beside every output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from latentdd.config import (
    RESIZE_MODES,
    BaselineConfig,
    DataConfig,
    DistillConfig,
    check_key,
    check_mapping,
    check_sections,
    coerce,
    load_yaml,
    plain,
    safe_yaml,
    save_resolved,
)
from latentdd.configs import build_section
from latentdd.errors import DataError, LatentDDError

# `latentdd compare`'s run: settings where they differ from RunConfig's.
COMPARE_DEFAULTS = {"methods": ["dm", "kmeans", "bacon", "idm", "random", "herding"], "ipcs": [1, 10]}

# The top-level sections of a --config file each command reads; any other is an error.
_RUN_SECTIONS = ("dataset", "latent", "decoder", "evaluator", "teacher", "run", "out")
SECTIONS = {
    "datasets": (),
    "baseline": ("dataset", "baseline"),
    "evaluate": ("dataset", "evaluator", "teacher"),
    "fit-teacher": ("dataset", "teacher"),
    "fit-vae": ("dataset", "latent"),
    "fit-prior": ("dataset", "latent", "decoder"),
    "encode": ("dataset", "latent"),
    "distill": ("dataset", "latent", "decoder", "distill"),
    "render": ("dataset", "latent", "decoder"),
    "run": _RUN_SECTIONS,
    "compare": _RUN_SECTIONS,
    "calibrate": ("dataset", "calibrate"),
}

EXAMPLES = {
    "datasets": "examples:\n  latentdd datasets\n  latentdd datasets --root ~/data",
    "baseline": "examples:\n  latentdd baseline --dataset fashion_mnist --method random --ipc 10 --seed 0 --out runs/random_ipc10",
    "evaluate": (
        "examples:\n  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist\n"
        "  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist --protocol dc --num-eval 5 --json dc.json\n"
        "  latentdd evaluate --images my_folder --dataset fashion_mnist --epochs 300 --no-dsa --use-weights\n"
        "  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist --protocol soft --model resnet18\n"
        "  latentdd evaluate --images sets/woof_ipc10 --dataset imagefolder --root ~/imagewoof --image-size 128 "
        "--resize center_crop --protocol soft --teacher torchvision:resnet18 --teacher-imagenet-classes "
        "LOC_synset_mapping.txt --model resnet18"
    ),
    "fit-teacher": (
        "examples:\n  latentdd fit-teacher --dataset fashion_mnist\n"
        "  latentdd fit-teacher --dataset fashion_mnist --model resnet18 --epochs 10 --validation 0.1\n"
        "  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist --protocol soft"
    ),
    "fit-vae": "examples:\n  latentdd fit-vae --dataset fashion_mnist\n  latentdd fit-vae --dataset fashion_mnist --set max_steps=3000",
    "fit-prior": (
        "examples:\n  latentdd fit-prior --dataset fashion_mnist --vae fit\n"
        "  latentdd fit-prior --dataset fashion_mnist --prior-set max_steps=3000 --prior-set 'block_out_channels=[64, 128]'"
    ),
    "encode": (
        "examples:\n  latentdd encode --dataset fashion_mnist --vae fit --out runs/latents/train\n"
        "  accelerate launch --num_processes 2 -m latentdd encode --dataset imagefolder --root ~/imagenette "
        "--image-size 128 --resize center_crop --vae stabilityai/sd-vae-ft-mse --out runs/latents/train\n"
        "  accelerate launch --multi_gpu --num_processes 2 -m latentdd encode ...   # 2 CPU processes, no GPU"
    ),
    "distill": (
        "examples:\n  latentdd distill --dataset fashion_mnist --vae fit --method kmeans --ipc 10 --seed 0 --out runs/kmeans10\n"
        "  latentdd evaluate --images runs/kmeans10/images --dataset fashion_mnist --use-weights\n"
        "  latentdd encode --dataset fashion_mnist --vae fit --out runs/latents/train\n"
        "  latentdd distill --dataset fashion_mnist --vae fit --latents runs/latents/train --method kmeans --ipc 10 "
        "--out runs/kmeans10"
    ),
    "render": (
        "examples:\n  latentdd render --dataset fashion_mnist --vae fit --synthetic runs/kmeans10 --out runs/kmeans10_vae\n"
        "  accelerate launch --multi_gpu --num_processes 2 -m latentdd render --dataset imagefolder --root DIR "
        "--image-size 64 --vae taesd:PATH --latents runs/latents/train --decoder diffusion --synthetic runs/kmeans10 "
        "--out runs/kmeans10_diffusion"
    ),
    "run": (
        "examples:\n  latentdd run                                  # configs/fashion_mnist.yaml defaults\n"
        "  latentdd run --config configs/fashion_mnist.yaml --num-eval 3 --out runs/fmnist_n3\n"
        "  latentdd run --config configs/cross_arch_fashion_mnist.yaml --out runs/cross_arch   # cross_arch.md\n"
        "  latentdd run --methods dm,kmeans --students convnet,convnet-bn,resnet18 --epochs 300 --out runs/xarch"
    ),
    "compare": (
        "examples:\n  latentdd compare --dataset fashion_mnist --methods bacon,kmeans,idm,random,herding --ipc 1,10 "
        "--num-eval 3 --out runs/compare\n"
        "  latentdd compare --config configs/compare_fashion_mnist.yaml"
    ),
    "calibrate": (
        "examples:\n  latentdd calibrate --out runs/calibration\n"
        "  latentdd calibrate --config configs/calibrate_fashion_mnist.yaml --out runs/calibration"
    ),
}


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", dest="data_name", help="registered dataset name (see `latentdd datasets`)")
    g.add_argument("--root", dest="data_root", help="folder holding the dataset (default: the standard places)")
    g.add_argument("--image-size", dest="data_image_size", type=int, help="resize/pad images to this size")
    g.add_argument("--channels", dest="data_channels", type=int, choices=(1, 3), help="convert images to 1 or 3 channels")
    g.add_argument("--resize", dest="data_resize", choices=RESIZE_MODES,
                   help=f"how to reach --image-size (default {DataConfig.resize})")
    g.add_argument("--download", dest="data_download", action="store_true", default=None,
                   help="let torchvision download cifar10/cifar100/svhn")
    g.add_argument("--validation", dest="data_validation", type=float,
                   help="hold this fraction of each class of train out as the val split "
                        f"(e.g. 0.1; default {DataConfig.validation:g})")


def _section(args: argparse.Namespace, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix)}


def _data_config(args, raw: dict) -> DataConfig:
    return build_section("dataset", raw.get("dataset"), _section(args, "data_"))


def _eval_config(args, raw: dict):
    """EvalConfig from defaults < protocol preset < YAML `evaluator:` < flags; and the protocol name."""
    from latentdd.evaluate.trainer import PROTOCOLS

    yaml_eval = dict(check_mapping(raw.get("evaluator"), "evaluator"))
    flags = _section(args, "eval_")
    protocol = flags.pop("protocol") or yaml_eval.pop("protocol", None) or "dsa"
    yaml_eval.pop("protocol", None)
    check_key(protocol, PROTOCOLS, "evaluator.protocol (--protocol)", what="protocol")
    return build_section("evaluator", PROTOCOLS[protocol] | {"protocol": protocol}, yaml_eval, flags), protocol


def _teacher_config(args, raw: dict, flags: dict | None = None):
    flags = dict(flags if flags is not None else _section(args, "teacher_"))
    if flags.get("class_map") is not None:
        flags["class_map"] = [v.strip() for v in flags["class_map"].split(",")]  # coerced (and checked) by build
    return build_section("teacher", raw.get("teacher"), flags)


def _add_teacher_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("teacher (protocol soft)")
    g.add_argument("--teacher", dest="teacher_source", metavar="fit|DIR|torchvision:resnet18",
                   help="fit: train one on the train split with the `teacher:` settings (cached); DIR: a folder "
                        "`latentdd fit-teacher` wrote; torchvision:resnet18: ImageNet weights (default: fit)")
    g.add_argument("--teacher-class-map", dest="teacher_class_map", metavar="I,J,...",
                   help="pretrained teacher: the ImageNet index of each dataset class")
    g.add_argument("--teacher-imagenet-classes", dest="teacher_imagenet_classes", metavar="FILE",
                   help="pretrained teacher, classes named by WordNet id: an ImageNet class list (LOC_synset_mapping.txt)")
    g.add_argument("--teacher-input-size", dest="teacher_input_size", type=int,
                   help="pretrained teacher: resize images to this side first, e.g. 224 (default: the dataset's size)")
    g.add_argument("--teacher-cache-dir", dest="teacher_cache_dir", help="where fitted teachers are cached "
                   "(default: the teacher: section's cache_dir, ~/.cache/latentdd)")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluator")
    from latentdd.evaluate.protocols import PROTOCOLS, describe
    from latentdd.nn.convnet import CONVNET_NORMS, MODELS

    g.add_argument("--protocol", dest="eval_protocol", choices=tuple(PROTOCOLS),
                   help="the evaluation protocol (default dsa): " + "; ".join(map(describe, PROTOCOLS)))
    g.add_argument("--model", dest="eval_model", choices=tuple(MODELS),
                   help=f"student architecture (default convnet): {', '.join(MODELS)}")
    g.add_argument("--depth", dest="eval_depth", type=int, help="ConvNet depth (default by image size)")
    g.add_argument("--width", dest="eval_width", type=int, help="channels of the first stage (default: the model's)")
    g.add_argument("--norm", dest="eval_norm", choices=CONVNET_NORMS, help="default: the model's (instancenorm)")
    g.add_argument("--loss", dest="eval_loss", choices=("ce", "teacher_kl"),
                   help="ce: cross-entropy on the set's labels; teacher_kl: a teacher's soft labels on every augmented "
                        "batch, e.g. with --protocol dsa (default: the protocol's)")
    g.add_argument("--temperature", dest="eval_temperature", type=float,
                   help="teacher_kl: the KL's temperature T (default: the protocol's, 4)")
    g.add_argument("--epochs", dest="eval_epochs", type=int)
    g.add_argument("--lr", dest="eval_lr", type=float)
    g.add_argument("--batch-size", dest="eval_batch_size", type=int)
    g.add_argument("--num-eval", dest="eval_num_eval", type=int, help="independent training runs (mean ± std)")
    g.add_argument("--dsa", dest="eval_dsa", action=argparse.BooleanOptionalAction, default=None,
                   help="DSA augmentation while training")
    g.add_argument("--use-weights", dest="eval_use_weights", action="store_true", default=None,
                   help="weight each image's loss by the set's per-sample weights")
    g.add_argument("--use-soft-labels", dest="eval_use_soft_labels", action="store_true", default=None)
    g.add_argument("--seed", dest="eval_seed", type=int, help="run i uses seed + i")
    g.add_argument("--compile", dest="eval_compile", choices=("auto", "on", "off"),
                   help="torch.compile the training step (auto: fall back to eager if it fails)")


def cmd_datasets(args, raw) -> int:
    from latentdd.data import DATASETS

    root = Path(args.root).expanduser() if args.root else None
    width = max(len(n) for n in DATASETS)
    for name, info in DATASETS.items():
        try:
            found = info.locate(root)
        except LatentDDError:
            found = None
        where = f"found at {found}" if found else "not found"
        print(f"{name:<{width}}  {where}\n{'':<{width}}  {info.description}")
        if not found:
            steps = info.instructions().replace("\n", "\n" + " " * (width + 13))
            print(f"{'':<{width}}  to get it: {steps}")
    return 0


def cmd_baseline(args, raw) -> int:
    from latentdd.export import export_image_folder
    from latentdd.pipelines.baseline import make_baseline

    data = _data_config(args, raw)
    job = build_section("baseline", raw.get("baseline"), {"method": args.method, "ipc": args.ipc, "seed": args.seed})
    method, ipc, seed = job.method, job.ipc, job.seed
    out = Path(args.out)
    train = data.load("train")
    subset = make_baseline(method, train, ipc, seed)
    resolved = {"dataset": data, "baseline": job}
    subset.meta["config"] = plain(resolved)
    export_image_folder(subset, out, overwrite=args.overwrite,
                        record={"dataset": {"name": data.name, "split": "train", "source": getattr(train, "source", "")},
                                "method": {"name": method, "ipc": ipc, "seed": seed}})
    save_resolved(out / "config.yaml", resolved)
    print(f"wrote {len(subset)} images ({ipc} per class, {method}, seed {seed}) to {out}")
    return 0


def cmd_evaluate(args, raw) -> int:
    import json

    from latentdd.data import dataset_info
    from latentdd.evaluate.trainer import channel_stats, evaluate_synthetic
    from latentdd.export import load_image_folder
    from latentdd.record import protocol_record

    data = _data_config(args, raw)
    cfg, protocol = _eval_config(args, raw)
    teacher_config = _teacher_config(args, raw) if cfg.loss == "teacher_kl" else None  # checked before any work
    if args.json:  # the report is written after every training: a place it cannot go must fail now
        from latentdd.io import check_writable_file

        check_writable_file(Path(args.json), "the report (--json)")
    test, train = data.load("test"), data.load("train")
    size = int(test.load([0]).shape[-1])
    synthetic = load_image_folder(args.images, class_names=list(test.class_names), image_size=size,
                                  channels=int(test.load([0]).shape[1]), resize=args.images_resize)
    mean, std = channel_stats(train)
    teacher = None
    if cfg.loss == "teacher_kl":
        from latentdd.evaluate.teacher import describe, resolve_teacher

        teacher = resolve_teacher(teacher_config, train, test,
                                  val=data.load("val") if data.validation else None, progress=not args.quiet)
        print(f"teacher {describe(teacher)}")
    manifest_record = _manifest_record(Path(args.images))
    record = protocol_record(
        dataset={"name": data.name, "test_split": f"test ({len(test)} images)", "image_shape": list(synthetic.image_shape),
                 "source": getattr(test, "source", "")},
        method=manifest_record.get("method") or synthetic.meta.get("method") or {"name": "unknown (external folder)"},
        ipc=manifest_record.get("ipc") or _ipc_of(synthetic),
        vae=manifest_record.get("vae"), decoder=manifest_record.get("decoder"),
        evaluator={}, num_eval=cfg.num_eval, seeds=[],
    )
    record["images"] = str(Path(args.images).resolve())
    kept = _kept_trainings(args.json, synthetic, cfg, data, teacher)
    done = kept.finished([cfg.seed + i for i in range(cfg.num_eval)]) if kept else {}
    if done:
        print(f"resuming: {len(done)} finished training(s) kept in {kept.path}")
    report = evaluate_synthetic(synthetic, test, cfg, mean=mean, std=std, flip=dataset_info(data.name).flip_augment,
                                record=record, progress=not args.quiet, teacher=teacher, done=done,
                                on_training=kept.add if kept else None)
    print(f"{data.name} | {len(synthetic)} images | protocol {protocol} ({report.record['evaluator']['epochs']} epochs, "
          f"{report.record['evaluator']['augmentation']}) | test accuracy {report.summary()} | runs {report.accuracies}"
          + (f" | no images of classes {', '.join(report.record['missing_classes'])}"
             if report.record["missing_classes"] else ""))
    if args.json:
        out = report.to_dict()
        out["config"] = {"dataset": data.__dict__, "evaluator": cfg.__dict__, "protocol": protocol}
        kept.finish(out)
        print(f"report written to {args.json}")
    else:
        print(json.dumps(report.record["evaluator"], indent=None)[:400])
    return 0


def _kept_trainings(report: str | None, synthetic, cfg, data, teacher):
    """`evaluate --json R` keeps each finished training in `R.trainings.json` until R is written (run's
    `KeptTrainings`), so an interrupted evaluation resumes at its next training; None without --json. A file there
    that latentdd did not write is refused, never replaced."""
    if report is None:
        return None
    from latentdd.cachekey import tensor_sha256
    from latentdd.config import plain
    from latentdd.pipelines.reports import KeptTrainings, StoredReport, read_report

    path = Path(report).with_name(Path(report).name + ".trainings.json")
    if path.exists() and not read_report(path, warn=False):
        raise DataError(f"{path} is in the way: `evaluate --json {report}` keeps its finished trainings there, and "
                        "it is not a file of latentdd's; move it, or choose another --json")
    parts = [t for t in (synthetic.images, synthetic.labels, synthetic.weights, synthetic.soft_labels) if t is not None]
    inputs = {"evaluator": cfg.identity(), "images": tensor_sha256(*parts), "data": dict(data.__dict__),
              "teacher": None if teacher is None else teacher.record}
    return KeptTrainings(StoredReport(Path(report), "evaluate", plain(inputs)), path)


def cmd_fit_teacher(args, raw) -> int:
    from latentdd.evaluate.teacher import describe, fit_teacher

    data = _data_config(args, raw)
    config = _teacher_config(args, raw, _section(args, "teacher_") | {"source": "fit"})
    train, test = data.load("train"), data.load("test")
    teacher = fit_teacher(train, test, config, val=data.load("val") if data.validation else None,
                          progress=not args.quiet)
    val = teacher.record.get("val_accuracy")
    print(f"teacher {describe(teacher)}" + (f"; val accuracy {val:.2f}%" if val is not None else ""))
    print(f"use it with: latentdd evaluate --images DIR --dataset {data.name} --protocol soft "
          f"--teacher {teacher.record['directory']}")
    return 0


def _manifest_record(folder: Path) -> dict:
    """The protocol record an exported folder carries ({} for folders made by other tools)."""
    from latentdd.export import MANIFEST_NAME, read_manifest

    return (read_manifest(folder).get("record") or {}) if (folder / MANIFEST_NAME).exists() else {}


def _ipc_of(synthetic) -> int | None:
    import torch

    counts = torch.bincount(synthetic.labels, minlength=synthetic.num_classes)
    return int(counts[0]) if bool((counts == counts[0]).all()) else None


def _add_latent_args(p: argparse.ArgumentParser, with_vae: bool = True) -> None:
    from latentdd.pipelines.distill import LatentSpaceConfig as L

    g = p.add_argument_group("latent space")
    if with_vae:
        g.add_argument("--vae", dest="latent_vae",
                       help=f"fit | pixel (the identity space) | taesd:PATH | DIR (diffusers or TAESD weights) | ORG/NAME hub id (default {L.vae})")
        g.add_argument("--vae-input-size", dest="latent_input_size", type=int, help="image side fed to the VAE")
        g.add_argument("--vae-resize", dest="latent_resize", choices=("resize", "pad"),
                       help="how dataset images reach the VAE's input size")
    g.add_argument("--cache-dir", dest="latent_cache_dir", help=f"fitted VAEs and latent caches (default {L.cache_dir})")
    g.add_argument("--shard-size", dest="latent_shard_size", type=int, help=f"images per latent-cache shard (default {L.shard_size})")
    g.add_argument("--encode-batch-size", dest="latent_batch_size", type=int, help=f"images per encoder call (default {L.batch_size})")
    g.add_argument("--encode-workers", dest="latent_workers", type=int,
                   help=f"processes decoding image files while the VAE encodes (default {L.workers}, decoding in "
                        "the encoding process)")
    g.add_argument("--set", dest="fit_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="FitVAEConfig field for --vae fit, e.g. --set max_steps=3000")


def _add_decoder_args(p: argparse.ArgumentParser, with_sampler: bool = True) -> None:
    g = p.add_argument_group("decoder")
    if with_sampler:
        from latentdd.render import DECODERS, decoder_defaults

        g.add_argument("--decoder", dest="decoder_name", choices=tuple(DECODERS),
                       help=f"{', '.join(DECODERS)} (default vae). vae: decode latents directly; diffusion: img2img "
                            "with the fitted prior first; dit / sd-img2img: img2img with a pretrained DiT / Stable "
                            "Diffusion (--prior)")
        g.add_argument("--prior", dest="decoder_prior", metavar="HUB_ID|DIR",
                       help="dit / sd-img2img: the pretrained model, a hub id or a downloaded folder; encode with its "
                            "VAE (--vae DIR/vae). Unset: facebook/DiT-XL-2-256 or stable-diffusion-v1-5/stable-diffusion-v1-5")
        g.add_argument("--class-map", dest="decoder_class_map", metavar="I,J,...",
                       help="dit: the ImageNet class index of each dataset class, comma-separated")
        g.add_argument("--imagenet-classes", dest="decoder_imagenet_classes", metavar="FILE",
                       help="dit: an ImageNet class list (e.g. LOC_synset_mapping.txt), for classes named by WordNet id")
        g.add_argument("--prompt", dest="decoder_prompt", metavar="TEXT",
                       help="sd-img2img: a class's prompt, {} standing for the class name (unset: the class name)")
        defaults = {name: decoder_defaults(name) for name in DECODERS}

        def by_decoder(key: str) -> str:
            return ", ".join(f"{name} {d[key]:g}" for name, d in defaults.items() if key in d)

        g.add_argument("--strength", dest="decoder_strength", type=float,
                       help=f"img2img decoders: share of the steps run from the latent, 0..1; 0 = vae (default: the "
                            f"decoder's, {by_decoder('strength')})")
        g.add_argument("--steps", dest="decoder_num_inference_steps", type=int,
                       help=f"img2img decoders: inference steps (default: the decoder's, {by_decoder('num_inference_steps')})")
        g.add_argument("--guidance-scale", dest="decoder_guidance_scale", type=float,
                       help=f"img2img decoders: classifier-free guidance; 1 = none (default: the decoder's, "
                            f"{by_decoder('guidance_scale')})")
        g.add_argument("--eta", dest="decoder_eta", type=float,
                       help=f"img2img decoders: DDIM eta (default: the decoder's, {by_decoder('eta')})")
        g.add_argument("--decode-batch-size", dest="decoder_batch_size", type=int,
                       help=f"latents per decoder call (default: the decoder's, {by_decoder('batch_size')})")
    g.add_argument("--prior-set", dest="prior_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="FitPriorConfig field for the diffusion prior, e.g. --prior-set max_steps=3000")


def _decoder_config(args, raw: dict):
    section = dict(check_mapping(raw.get("decoder"), "decoder"))
    flags = _section(args, "decoder_")
    if flags.get("class_map") is not None:
        flags["class_map"] = [v.strip() for v in flags["class_map"].split(",")]  # coerced (and checked) by build
    # prior: a pretrained model's hub id or folder (dit, sd-img2img; --prior), or the fitted prior's settings
    # (diffusion; a mapping, --prior-set).
    yaml_prior = section.pop("prior", None)
    prior = flags.pop("prior", None) or yaml_prior
    overrides = _key_values(getattr(args, "prior_overrides", []), "--prior-set")
    if isinstance(prior, str):
        if overrides:
            raise DataError(f"--prior-set sets the fitted prior of --decoder diffusion; the prior {prior!r} is a "
                            "pretrained model (drop --prior-set, or the --prior / decoder.prior)")
    else:
        prior = dict(check_mapping(prior, "decoder.prior")) | overrides
    return build_section("decoder", section, flags, {"prior": prior})


def _key_values(pairs: list[str], flag: str) -> dict:
    """["a=1", "b=true"] -> {"a": 1, "b": True} (values parsed as YAML; the consumer coerces their types)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            raise DataError(f"{flag} expects KEY=VALUE (e.g. {flag} max_steps=3000); got {pair!r}")
        try:
            out[key] = safe_yaml(value)
        except yaml.YAMLError as err:
            raise DataError(f"{flag} {pair!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
    return out


def _latent_config(args, raw: dict):
    section = dict(check_mapping(raw.get("latent"), "latent"))
    flags = _section(args, "latent_")
    fit = dict(check_mapping(section.pop("fit", None), "latent.fit")) | \
        _key_values(getattr(args, "fit_overrides", []), "--set")
    return build_section("latent", section, flags, {"fit": fit})


def cmd_fit_vae(args, raw) -> int:
    from latentdd.pipelines.distill import load_or_fit_vae

    data = _data_config(args, raw)
    space = _latent_config(args, raw)
    space.vae = "fit"
    train, test = data.load("train"), data.load("test")
    vae, report = load_or_fit_vae(space, train, test, progress=not args.quiet)
    where = "loaded from the cache" if report.get("cached") else f"trained in {report['train_seconds']:.0f} s"
    print(f"{vae.name}: {vae.num_parameters} parameters, latents {tuple(vae.latent_shape)}, {where}; "
          f"test PSNR {report['test_psnr']:.2f} dB; saved in {Path(space.cache_dir).expanduser() / 'vae'}")
    return 0


def cmd_fit_prior(args, raw) -> int:
    from latentdd.pipelines.distill import load_or_fit_prior, prepare_latent_space

    data = _data_config(args, raw)
    space = _latent_config(args, raw)
    decoder = _decoder_config(args, raw)
    prepared = prepare_latent_space(data, space, progress=not args.quiet)
    _, _, report = load_or_fit_prior(decoder, prepared, space.cache_dir, progress=not args.quiet)
    where = "loaded from the cache" if report["cached"] else f"trained in {report['train_seconds']:.0f} s"
    print(f"{report['name']}: {report['num_parameters']} parameters, {report['num_classes']} classes + the null class, "
          f"latents {tuple(prepared.latents.latent_shape)}, {report['steps']} steps, final loss "
          f"{report['final_loss']:.4f}, {where}; saved in {report['directory']}")
    return 0


def cmd_encode(args, raw) -> int:
    from latentdd.io import claim_folder
    from latentdd.latents.cache import CacheConfig, encode_split, write_manifest
    from latentdd.parallel import process_state
    from latentdd.vae import VAEInputAdapter
    from latentdd.pipelines.distill import cache_dataset_record, load_or_fit_vae

    data = _data_config(args, raw)
    space = _latent_config(args, raw)
    # Without a GPU, processes started by `accelerate launch --multi_gpu` / torchrun join a gloo group.
    state = process_state()
    with state.main_process_first():  # --out: missing, empty or latentdd's, and writable -- before any work
        claim_folder(Path(args.out), "latent-cache")
    images, train, test = data.load(args.split), data.load("train"), data.load("test")
    with state.main_process_first():  # for --vae fit, rank 0 fits and the others load its cache entry
        vae, _ = load_or_fit_vae(space, train, test, progress=not args.quiet)
    vae = vae.to(state.device)
    adapter = VAEInputAdapter.for_vae(vae, tuple(images.load([0]).shape[1:]), space.resize)
    identity = vae.identity() | {"adapter": adapter.identity()}
    dataset = cache_dataset_record(data, train, test, args.split)  # distill's, so each reuses the other's cache
    encode_split(images, lambda x: vae.encode(adapter.to_vae(x.to(state.device))), args.out, vae=identity,
                 dataset=dataset, config=CacheConfig(space.shard_size, space.batch_size, space.workers),
                 rank=state.process_index, world_size=state.num_processes, progress=not args.quiet)
    state.wait_for_everyone()
    if state.is_main_process:
        manifest = write_manifest(args.out, list(images.class_names))
        print(f"encoded {manifest['num_images']} images of {data.name}/{args.split} into {len(manifest['shards'])} "
              f"shards of latents {tuple(manifest['latent_shape'])} in {args.out}")
    return 0


def cmd_distill(args, raw) -> int:
    from latentdd.distill import coerce_params, make_distiller
    from latentdd.io import check_output
    from latentdd.pipelines.distill import distill_to_folder, make_decoder, prepare_latent_space
    from latentdd.presets import resolve

    data = _data_config(args, raw)
    space = _latent_config(args, raw)
    decoder_config = _decoder_config(args, raw)
    section = dict(check_mapping(raw.get("distill"), "distill"))
    overrides = dict(check_mapping(section.pop("params", None), "distill.params")) | _key_values(args.param, "--param")
    job = build_section("distill", section, {"method": args.method, "ipc": args.ipc, "seed": args.seed,
                                             "preset": args.preset, "latents": args.latents})
    method, ipc, seed = job.method, job.ipc, job.seed
    check_output(Path(args.out).expanduser(), overwrite=args.overwrite)  # a foreign or unwritable --out: before fitting
    # The preset's parameters with the overrides over them; every parameter, the defaults included, coerced to
    # its type (and checked) before any work starts.
    resolved = resolve(method, ipc, job.preset, coerce_params(method, overrides))
    params = plain(make_distiller(method, **resolved.params))
    prepared = prepare_latent_space(data, space, latents_dir=job.latents, progress=not args.quiet)
    decoder, decoder_record = make_decoder(decoder_config, prepared, space.cache_dir, progress=not args.quiet)
    config = {"dataset": data, "latent": space,
              "distill": {"method": method, "ipc": ipc, "seed": seed, "preset": job.preset, "params": params,
                          "latents": job.latents},
              "decoder": decoder_config}
    out = distill_to_folder(prepared, method, ipc, seed, args.out, params=params, overwrite=args.overwrite,
                            config=config, decoder=decoder, decoder_record=decoder_record,
                            preset=resolved.record(), progress=not args.quiet)
    print(f"wrote {ipc} x {len(prepared.latents.class_names)} images ({method}, preset {job.preset}, seed {seed}) "
          f"to {out}/images; "
          f"evaluate with: latentdd evaluate --images {out}/images --dataset {data.name}")
    return 0


def cmd_render(args, raw) -> int:
    from latentdd.io import check_output
    from latentdd.parallel import process_state
    from latentdd.pipelines.render import check_synthetic, load_synthetic_latents, render_to_folder, setup_decoder

    data = _data_config(args, raw)
    space = _latent_config(args, raw)
    decoder_config = _decoder_config(args, raw)
    state = process_state()
    out = Path(args.out).expanduser()
    with state.main_process_first():  # a foreign or unwritable --out, unreadable latents: before any work
        check_output(out, overwrite=args.overwrite)
        synthetic = load_synthetic_latents(args.synthetic)
    seed = args.seed if args.seed is not None else int(synthetic.params.get("seed", 0))
    decoder, record, stages = setup_decoder(data, space, decoder_config, state, latents_dir=args.latents,
                                            progress=not args.quiet)
    check_synthetic(synthetic, data, stages, decoder.vae.latent_shape, Path(args.synthetic).expanduser())
    config = {"dataset": data, "latent": space, "decoder": decoder_config,
              "render": {"synthetic": args.synthetic, "seed": seed, "latents": args.latents}}
    written = render_to_folder(synthetic, decoder, record, stages, out, seed=seed, state=state,
                               overwrite=args.overwrite, config=config)
    if written is not None:
        print(f"rendered {len(synthetic)} latents ({decoder_config.name} decoder, {state.num_processes} "
              f"process(es)) to {written}/images")
    return 0


def _names(value: str, flag: str, example: str) -> list[str]:
    """A comma-separated flag's names; DataError when it names none (e.g. `--students ,`), which would
    otherwise silently mean an empty list."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise DataError(f"{flag} {value!r} names nothing; give comma-separated names, e.g. {flag} {example}")
    return names


def _run_setup(args, raw, *, run_defaults: dict, out_default: str):
    """The shared inputs of `run` and `compare` -> (data, space, decoder, evaluator, RunConfig, out)."""
    data = _data_config(args, raw)
    space = _latent_config(args, raw)
    decoder = _decoder_config(args, raw)
    evaluator, _ = _eval_config(args, raw)
    section = run_defaults | dict(check_mapping(raw.get("run"), "run"))
    if args.methods is not None:
        section["methods"] = _names(args.methods, "--methods", "dm,kmeans")
    if args.ipc is not None:
        section["ipcs"] = _names(args.ipc, "--ipc", "1,10")  # coerced (and checked) by build
    if args.run_eval_split:
        section["eval_split"] = args.run_eval_split
    if args.latents_from:
        section["latents_from"] = args.latents_from
    if args.latents:
        section["latents_dir"] = args.latents
    if args.consistency:
        section["consistency"] = True
    if args.students is not None:
        section["students"] = _names(args.students, "--students", "resnet18,convnet-bn")
    listed = section.get("reports_from", [])
    if args.reports_from is not None and isinstance(listed, list):  # added to the config's (any other: refused)
        section["reports_from"] = listed + [p.strip() for p in args.reports_from.split(",") if p.strip()]
    if args.no_random_real:
        section["random_real"] = False
    if args.random_real_part is not None:
        section["random_real_part"] = args.random_real_part
    config = build_section("run", section)
    out = Path(args.out or coerce(str | None, raw.get("out"), "out") or out_default.format(dataset=data.name))
    return data, space, decoder, evaluator, config, out


def cmd_run(args, raw) -> int:
    from latentdd.pipelines.run import run

    data, space, decoder, evaluator, config, out = _run_setup(args, raw, run_defaults={},
                                                              out_default="runs/{dataset}")
    run(data, space, config, evaluator, out, decoder=decoder, progress=not args.quiet,
        teacher=_teacher_config(args, raw) if evaluator.loss == "teacher_kl" else None)
    print((out / "results.md").read_text())
    if config.students:
        print((out / "cross_arch.md").read_text())
    for spec in config.specs() if config.random_real_part is None else []:
        for ipc in filter(spec.runs_at, config.ipcs):
            folder = out / f"{spec.label}_ipc{ipc}"
            print(f"{spec.label}, IPC {ipc}: grid {folder / 'grid.png'}; exported image folder {folder / 'images'} "
                  "(manifest.json beside the images)")
    return 0


def cmd_compare(args, raw) -> int:
    from latentdd.pipelines.compare import compare

    data, space, decoder, evaluator, config, out = _run_setup(args, raw, run_defaults=COMPARE_DEFAULTS,
                                                              out_default="runs/{dataset}_compare")
    compare(data, space, config, evaluator, out, decoder=decoder, progress=not args.quiet,
            teacher=_teacher_config(args, raw) if evaluator.loss == "teacher_kl" else None)
    print((out / "results.md").read_text())
    print(f"also in {out}: results.csv, accuracy_vs_ipc.png, grid_<method>.png, and each method's folder")
    return 0


def cmd_calibrate(args, raw) -> int:
    from latentdd.pipelines.calibrate import run_calibration

    data = _data_config(args, raw)
    section = dict(check_mapping(raw.get("calibrate"), "calibrate"))
    if args.full_data_epochs is not None:
        section["full_data_epochs"] = args.full_data_epochs
    if args.compile is not None:
        section["evaluator"] = dict(check_mapping(section.get("evaluator"), "calibrate.evaluator")) | \
            {"compile": args.compile}
    config = build_section("calibrate", section)
    rows = run_calibration(data, config, Path(args.out), progress=not args.quiet)
    print((Path(args.out) / "results.md").read_text())
    return 0 if rows else 1


def _preset_help() -> str:
    """--preset's help, from the presets shipped with the package."""
    from latentdd.presets import all_preset_names, presets

    measured = "; ".join(f"{method} at IPC {', '.join(map(str, preset['ipc']))}"
                         for method, named in presets().items() for preset in named.values())
    return (f"{', '.join(all_preset_names())}: where a method's parameters start, --param merging over them. "
            f"default (the default): the settings latentdd's measured rows use ({measured}; latentdd/presets.yaml "
            "says how each was chosen), else the reference; reference: the method's public code")


def make_parser() -> argparse.ArgumentParser:
    from latentdd.distill import DISTILLERS

    parser = argparse.ArgumentParser(prog="latentdd", description="Dataset distillation in latent space.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML file with sections (dataset:, evaluator:, ...); flags override it")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        return p

    p = add("datasets", "List the datasets latentdd knows and where their files were found.")
    p.add_argument("--root", help="also look in this folder")
    p.set_defaults(func=cmd_datasets)

    p = add("baseline", "Export a random real subset (IPC images per class) as an image folder.")
    _add_data_args(p)
    p.add_argument("--method", choices=("random",), help=f"baseline selection (default {BaselineConfig.method})")
    p.add_argument("--ipc", type=int, help="images per class")
    p.add_argument("--seed", type=int, help=f"selection seed (default {BaselineConfig.seed})")
    p.add_argument("--out", required=True, help="output image folder (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_baseline)

    p = add("evaluate", "Train ConvNets on an image folder, test on the real test split, report mean ± std.")
    p.add_argument("--images", required=True, help="image folder: <class>/<image>.png (+ manifest.json if ours)")
    p.add_argument("--images-resize", choices=("pad", "resize", "center_crop"),
                   help="how to bring folder images of another size to the dataset's size (default: refuse)")
    _add_data_args(p)
    _add_eval_args(p)
    _add_teacher_source_args(p)
    p.add_argument("--json", help="write the report (accuracies, record, resolved config) here; finished trainings "
                   "are kept in JSON.trainings.json meanwhile, so re-running an interrupted evaluation resumes")
    p.set_defaults(func=cmd_evaluate)

    p = add("fit-teacher", "Train a teacher (any registered student architecture) on the real train split; cached by "
                           "content, its test accuracy recorded.")
    _add_data_args(p)
    from latentdd.evaluate.teacher import TeacherConfig as T
    from latentdd.nn.convnet import MODELS

    p.add_argument("--model", dest="teacher_model", choices=tuple(MODELS), help=f"architecture (default {T.model})")
    p.add_argument("--width", dest="teacher_width", type=int, help=f"first-stage channels (default {T.width})")
    p.add_argument("--depth", dest="teacher_depth", type=int, help="ConvNet depth (default by image size)")
    p.add_argument("--norm", dest="teacher_norm", help="default: the model's")
    p.add_argument("--epochs", dest="teacher_epochs", type=int, help=f"epochs over the train split (default {T.epochs})")
    p.add_argument("--lr", dest="teacher_lr", type=float, help=f"learning rate (default {T.lr})")
    p.add_argument("--batch-size", dest="teacher_batch_size", type=int, help=f"batch size (default {T.batch_size})")
    p.add_argument("--seed", dest="teacher_seed", type=int, help=f"initialisation and shuffling seed (default {T.seed})")
    p.add_argument("--cache-dir", dest="teacher_cache_dir", help=f"cache root (default {T.cache_dir})")
    p.set_defaults(func=cmd_fit_teacher)

    p = add("fit-vae", "Train the small AutoencoderKL used by --vae fit (cached: a second call is instant).")
    _add_data_args(p)
    _add_latent_args(p, with_vae=False)
    p.set_defaults(func=cmd_fit_vae)

    p = add("fit-prior", "Fit the class-conditional diffusion prior behind --decoder diffusion (cached: a second call is instant).")
    _add_data_args(p)
    _add_latent_args(p)
    _add_decoder_args(p, with_sampler=False)
    p.set_defaults(func=cmd_fit_prior)

    p = add("encode", "Encode a split into a resumable latent cache (run under `accelerate launch` for several processes).")
    _add_data_args(p)
    _add_latent_args(p)
    p.add_argument("--split", default="train", help="split to encode (default train)")
    p.add_argument("--out", required=True, help="cache folder (re-running resumes)")
    p.set_defaults(func=cmd_encode)

    p = add("distill", "Distil IPC synthetic latents per class, render them, export an image folder.")
    _add_data_args(p)
    _add_latent_args(p)
    p.add_argument("--method", metavar="METHOD",
                   help=f"distiller (default {DistillConfig.method}): {', '.join(DISTILLERS)}")
    p.add_argument("--preset", metavar="PRESET", help=_preset_help())
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="distiller parameter, merged over the preset's, e.g. --param iterations=1000 "
                        "--param medoid=true")
    p.add_argument("--ipc", type=int, help="images per class")
    p.add_argument("--seed", type=int, help=f"distillation seed (default {DistillConfig.seed})")
    p.add_argument("--latents", metavar="DIR",
                   help="distil the latent cache `latentdd encode --out DIR` wrote (its train split, encoded with "
                        "the --vae given here) instead of encoding")
    _add_decoder_args(p)
    p.add_argument("--out", required=True, help="output folder: images/, latents.safetensors, distill.json")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_distill)

    p = add("render", "Render synthetic latents with a decoder, split over the processes of `accelerate launch`.")
    _add_data_args(p)
    _add_latent_args(p)
    _add_decoder_args(p)
    p.add_argument("--synthetic", required=True, metavar="DIR|FILE",
                   help="a `latentdd distill` folder, or its latents.safetensors")
    p.add_argument("--latents", metavar="DIR",
                   help="the train latent cache (`latentdd encode --out DIR`) that the diffusion prior is fitted to")
    p.add_argument("--seed", type=int, help="the img2img noise seed (default: the distillation's seed)")
    p.add_argument("--out", required=True, help="output folder: images/, grid.png, render.json")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_render)

    from latentdd.pipelines.calibrate import CalibrateConfig
    from latentdd.pipelines.cross_arch import STUDENT_PRESETS
    from latentdd.pipelines.run_config import RunConfig

    run_defaults = {"methods": RunConfig().methods, "ipcs": RunConfig().ipcs}
    for command, about, defaults, out, func in (
        ("run", "The main job: fit/load the VAE, encode, distil, render, evaluate next to random real, tabulate.",
         run_defaults, "runs/<dataset>", cmd_run),
        ("compare", "Several distillers on the same latents, decoder and evaluator: table, CSV, plot, image grids.",
         run_defaults | COMPARE_DEFAULTS, "runs/<dataset>_compare", cmd_compare),
    ):
        methods, ipcs = ",".join(defaults["methods"]), ",".join(map(str, defaults["ipcs"]))
        p = add(command, about)
        _add_data_args(p)
        _add_latent_args(p)
        _add_eval_args(p)
        _add_decoder_args(p)
        p.add_argument("--methods", help=f"comma-separated distillers (default {methods}), each with its default "
                                         f"preset (see --preset of `latentdd distill`; a config's run.methods entry "
                                         f"may name another): {', '.join(DISTILLERS)}")
        p.add_argument("--ipc", help=f"comma-separated IPCs (default {ipcs})")
        p.add_argument("--eval-split", dest="run_eval_split", choices=("test", "val"),
                       help="evaluate on the test split (default) or the val split (needs --validation)")
        p.add_argument("--latents-from", dest="latents_from", metavar="DIR",
                       help="an earlier run's folder: render its synthetic latents where method, parameters, IPC, "
                            "seed and VAE match, instead of distilling again (e.g. another --decoder)")
        p.add_argument("--latents", metavar="DIR",
                       help="the train latent cache `latentdd encode --out DIR` wrote (its train split, encoded with "
                            "the --vae given here), read instead of encoding")
        p.add_argument("--consistency", action="store_true",
                       help="also report each set's class consistency (the share of its images a ConvNet trained "
                            "on the real train split calls their class)")
        p.add_argument("--students", metavar="A,B,...",
                       help="also evaluate every set and random-real subset on these students and write "
                            f"cross_arch.md / .json (presets: {', '.join(STUDENT_PRESETS)}; mappings of evaluator "
                            "settings in the config's run.students)")
        p.add_argument("--reports-from", dest="reports_from", metavar="DIR,...",
                       help="earlier run folders (added to the config's run.reports_from) whose finished trainings "
                            "of the same images, data and evaluator settings are reused seed by seed, e.g. trainings "
                            "run in parallel processes with --seed S --num-eval 1 --no-random-real")
        p.add_argument("--no-random-real", dest="no_random_real", action="store_true",
                       help="skip the random-real subsets (run.random_real: false)")
        p.add_argument("--random-real-part", dest="random_real_part", type=int, metavar="K",
                       help="evaluate only random-real subset K (0-based; seed run.seed + K) and no distilled set: "
                            "one part of a run split across processes, gathered by the whole run's --reports-from")
        p.add_argument("--out", help=f"output folder (default {out}); re-running resumes")
        p.set_defaults(func=func)

    p = add("calibrate", "Reproduce the published random-real and full-data accuracies (the ruler's check).")
    _add_data_args(p)
    p.add_argument("--full-data-epochs", type=int, help=f"epochs on the whole train split (0 skips; default {CalibrateConfig.full_data_epochs})")
    p.add_argument("--compile", choices=("auto", "on", "off"))
    p.add_argument("--out", required=True, help="output folder (re-running resumes)")
    p.set_defaults(func=cmd_calibrate)
    return parser


def _version() -> str:
    from latentdd import __version__

    return f"latentdd {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING, format="%(levelname)s %(message)s")
    # torch's C++ builder warns about CUDA on every CPU-only machine; it is not ours to act on.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # faiss logs which CPU build it loaded (four lines) at INFO on import; only its warnings concern a user.
    logging.getLogger("faiss").setLevel(logging.WARNING)
    try:
        raw = load_yaml(args.config)
        check_sections(raw, SECTIONS[args.command], args.command)
        return args.func(args, raw)
    except LatentDDError as err:
        print(f"latentdd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latentdd {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
