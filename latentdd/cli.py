"""The `latentdd` command: datasets, baseline, evaluate, calibrate.

Settings come from dataclass defaults, then a YAML file (--config), then flags (every config key is one,
`--SECTION.KEY VALUE`; the short flags are aliases: `latentdd.cli_settings`); the resolved settings are saved
beside every output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from latentdd.cli_settings import CommandParser, add_settings, flags, resolve
from latentdd.config import (
    DataConfig,
    check_key,
    check_mapping,
    check_sections,
    coerce,
    load_yaml,
    plain,
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
        "  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist --evaluator.epochs 300 "
        "--evaluator.cutmix 0.5\n"
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
    "fit-vae": (
        "examples:\n  latentdd fit-vae --dataset fashion_mnist\n"
        "  latentdd fit-vae --dataset fashion_mnist --latent.fit.max_steps 3000   # or --set max_steps=3000"
    ),
    "fit-prior": (
        "examples:\n  latentdd fit-prior --dataset fashion_mnist --vae fit\n"
        "  latentdd fit-prior --dataset fashion_mnist --decoder.prior.max_steps 3000 --decoder.prior.block_out_channels "
        "'[64, 128]'"
    ),
    "encode": (
        "examples:\n  latentdd encode --dataset fashion_mnist --vae fit --out runs/latents/train\n"
        "  accelerate launch --num_processes 2 -m latentdd encode --dataset imagefolder --root ~/imagenette "
        "--image-size 128 --resize center_crop --vae stabilityai/sd-vae-ft-mse --out runs/latents/train\n"
        "  accelerate launch --multi_gpu --num_processes 2 -m latentdd encode ...   # 2 CPU processes, no GPU"
    ),
    "distill": (
        "examples:\n  latentdd distill --dataset fashion_mnist --vae fit --method kmeans --ipc 10 --seed 0 --out runs/kmeans10\n"
        "  latentdd distill --dataset fashion_mnist --method dm --ipc 10 --distill.params.iterations 300 --out runs/dm10\n"
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


def _flags(args: argparse.Namespace, section: str) -> dict:
    """The keys of `section` that flags set (`--epochs`, `--evaluator.epochs`): {key: value}."""
    return flags(args, section, SECTIONS)


def _data_config(args, raw: dict) -> DataConfig:
    return build_section("dataset", raw.get("dataset"), _flags(args, "dataset"))


def _eval_config(args, raw: dict):
    """EvalConfig from defaults < protocol preset < YAML `evaluator:` < flags; and the protocol name."""
    from latentdd.evaluate.trainer import PROTOCOLS

    settings = dict(check_mapping(raw.get("evaluator"), "evaluator")) | _flags(args, "evaluator")
    protocol = settings.pop("protocol", None) or "dsa"
    check_key(protocol, PROTOCOLS, "evaluator.protocol (--protocol)", what="protocol")
    return build_section("evaluator", PROTOCOLS[protocol] | {"protocol": protocol}, settings), protocol


def _teacher_config(args, raw: dict, more: dict | None = None):
    return build_section("teacher", raw.get("teacher"), _flags(args, "teacher"), more)


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
    job = build_section("baseline", raw.get("baseline"), _flags(args, "baseline"))
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
    config = _teacher_config(args, raw, {"source": "fit"})
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


def _decoder_config(args, raw: dict):
    section = dict(check_mapping(raw.get("decoder"), "decoder"))
    flags = _flags(args, "decoder")
    # prior: a pretrained model's hub id or folder (dit, sd-img2img; --prior), or the fitted prior's settings
    # (diffusion; a mapping, --decoder.prior.KEY / --prior-set).
    yaml_prior = section.pop("prior", None)
    prior = flags.pop("prior", None) or yaml_prior
    overrides = _flags(args, "decoder.prior")
    if isinstance(prior, str):
        if overrides:
            raise DataError(f"--decoder.prior.KEY (--prior-set) sets the fitted prior of --decoder diffusion; the "
                            f"prior {prior!r} is a pretrained model (drop --prior-set, or the --prior / decoder.prior)")
    else:
        prior = dict(check_mapping(prior, "decoder.prior")) | overrides
    return build_section("decoder", section, flags, {"prior": prior})


def _latent_config(args, raw: dict):
    section = dict(check_mapping(raw.get("latent"), "latent"))
    fit = dict(check_mapping(section.pop("fit", None), "latent.fit")) | _flags(args, "latent.fit")
    return build_section("latent", section, _flags(args, "latent"), {"fit": fit})


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
    overrides = dict(check_mapping(section.pop("params", None), "distill.params")) | _flags(args, "distill.params")
    job = build_section("distill", section, _flags(args, "distill"))
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


def _run_setup(args, raw, *, run_defaults: dict, out_default: str):
    """The shared inputs of `run` and `compare` -> (data, space, decoder, evaluator, RunConfig, out)."""
    data = _data_config(args, raw)
    space = _latent_config(args, raw)
    decoder = _decoder_config(args, raw)
    evaluator, _ = _eval_config(args, raw)
    section = run_defaults | dict(check_mapping(raw.get("run"), "run"))
    section |= _flags(args, "run")
    listed = section.get("reports_from", [])
    if args.reports_from is not None and isinstance(listed, list):  # added to the config's (any other: refused)
        section["reports_from"] = listed + [p.strip() for p in args.reports_from.split(",") if p.strip()]
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
    section = dict(check_mapping(raw.get("calibrate"), "calibrate")) | _flags(args, "calibrate")
    for mapping in ("evaluator", "teacher"):
        if more := _flags(args, f"calibrate.{mapping}"):
            section[mapping] = dict(check_mapping(section.get(mapping), f"calibrate.{mapping}")) | more
    config = build_section("calibrate", section)
    rows = run_calibration(data, config, Path(args.out), progress=not args.quiet)
    print((Path(args.out) / "results.md").read_text())
    return 0 if rows else 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentdd", description="Dataset distillation in latent space.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    def add(name, help_text):
        """Command `name` with --config, --quiet and the settings flags of the sections it reads."""
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML file with sections (dataset:, evaluator:, ...); flags override it")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        add_settings(p, name, SECTIONS)
        return p

    p = add("datasets", "List the datasets latentdd knows and where their files were found.")
    p.add_argument("--root", help="also look in this folder")
    p.set_defaults(func=cmd_datasets)

    p = add("baseline", "Export a random real subset (IPC images per class) as an image folder.")
    p.add_argument("--out", required=True, help="output image folder (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_baseline)

    p = add("evaluate", "Train ConvNets on an image folder, test on the real test split, report mean ± std.")
    p.add_argument("--images", required=True, help="image folder: <class>/<image>.png (+ manifest.json if ours)")
    p.add_argument("--images-resize", choices=("pad", "resize", "center_crop"),
                   help="how to bring folder images of another size to the dataset's size (default: refuse)")
    p.add_argument("--json", help="write the report (accuracies, record, resolved config) here; finished trainings "
                   "are kept in JSON.trainings.json meanwhile, so re-running an interrupted evaluation resumes")
    p.set_defaults(func=cmd_evaluate)

    p = add("fit-teacher", "Train a teacher (any registered student architecture) on the real train split; cached by "
                           "content, its test accuracy recorded.")
    p.set_defaults(func=cmd_fit_teacher)

    p = add("fit-vae", "Train the small AutoencoderKL used by --vae fit (cached: a second call is instant).")
    p.set_defaults(func=cmd_fit_vae)

    p = add("fit-prior", "Fit the class-conditional diffusion prior behind --decoder diffusion (cached: a second call is instant).")
    p.set_defaults(func=cmd_fit_prior)

    p = add("encode", "Encode a split into a resumable latent cache (run under `accelerate launch` for several processes).")
    p.add_argument("--split", default="train", help="split to encode (default train)")
    p.add_argument("--out", required=True, help="cache folder (re-running resumes)")
    p.set_defaults(func=cmd_encode)

    p = add("distill", "Distil IPC synthetic latents per class, render them, export an image folder.")
    p.add_argument("--out", required=True, help="output folder: images/, latents.safetensors, distill.json")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_distill)

    p = add("render", "Render synthetic latents with a decoder, split over the processes of `accelerate launch`.")
    p.add_argument("--synthetic", required=True, metavar="DIR|FILE",
                   help="a `latentdd distill` folder, or its latents.safetensors")
    p.add_argument("--latents", metavar="DIR",
                   help="the train latent cache (`latentdd encode --out DIR`) that the diffusion prior is fitted to")
    p.add_argument("--seed", type=int, help="the img2img noise seed (default: the distillation's seed)")
    p.add_argument("--out", required=True, help="output folder: images/, grid.png, render.json")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_render)

    for command, about, out, func in (
        ("run", "The main job: fit/load the VAE, encode, distil, render, evaluate next to random real, tabulate.",
         "runs/<dataset>", cmd_run),
        ("compare", "Several distillers on the same latents, decoder and evaluator: table, CSV, plot, image grids.",
         "runs/<dataset>_compare", cmd_compare),
    ):
        p = add(command, about)
        p.add_argument("--reports-from", dest="reports_from", metavar="DIR,...",
                       help="earlier run folders (added to the config's run.reports_from) whose finished trainings "
                            "of the same images, data and evaluator settings are reused seed by seed, e.g. trainings "
                            "run in parallel processes with --seed S --num-eval 1 --no-random-real")
        p.add_argument("--out", help=f"output folder (default {out}); re-running resumes")
        p.set_defaults(func=func)

    p = add("calibrate", "Reproduce the published random-real and full-data accuracies (the ruler's check).")
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
        resolve(args, SECTIONS)  # every flag's key known and value read, before any work
        return args.func(args, raw)
    except LatentDDError as err:
        print(f"latentdd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latentdd {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
