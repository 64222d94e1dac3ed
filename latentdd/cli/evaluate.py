"""The `latentdd evaluate` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentdd.cli.sections import (
    data_config,
    eval_config,
    teacher_config,
)
from latentdd.config import plain
from latentdd.errors import DataError

ABOUT = "Train ConvNets on an image folder, test on the real test split, report mean ± std."
EXAMPLES = (
    "examples:\n  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist\n"
    "  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist --protocol dc --num-eval 5 --json dc.json\n"
    "  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist --evaluator.epochs 300 "
    "--evaluator.cutmix 0.5\n"
    "  latentdd evaluate --images my_folder --dataset fashion_mnist --epochs 300 --no-dsa --use-weights\n"
    "  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist --protocol soft --model resnet18\n"
    "  latentdd evaluate --images sets/woof_ipc10 --dataset imagefolder --root ~/imagewoof --image-size 128 "
    "--resize center_crop --protocol soft --teacher torchvision:resnet18 --teacher-imagenet-classes "
    "LOC_synset_mapping.txt --model resnet18"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd evaluate` that are not config keys (those come from `latentdd.cli.settings`)."""
    p.add_argument("--images", required=True, help="image folder: <class>/<image>.png (+ manifest.json if ours)")
    p.add_argument("--images-resize", choices=("pad", "resize", "center_crop"),
                   help="how to bring folder images of another size to the dataset's size (default: refuse)")
    p.add_argument("--json", help="write the report (accuracies, record, resolved config) here; finished trainings "
                   "are kept in JSON.trainings.json meanwhile, so re-running an interrupted evaluation resumes")


def _kept_trainings(report: str | None, synthetic, cfg, data, teacher):
    """`evaluate --json R` keeps each finished training in `R.trainings.json` until R is written (run's
    `KeptTrainings`), so an interrupted evaluation resumes at its next training; None without --json. A file there
    that latentdd did not write is refused, never replaced."""
    if report is None:
        return None
    from latentdd.cachekey import tensor_sha256
    from latentdd.pipelines.reports import KeptTrainings, StoredReport, read_report

    path = Path(report).with_name(Path(report).name + ".trainings.json")
    if path.exists() and not read_report(path, warn=False):
        raise DataError(f"{path} is in the way: `evaluate --json {report}` keeps its finished trainings there, and "
                        "it is not a file of latentdd's; move it, or choose another --json")
    parts = [t for t in (synthetic.images, synthetic.labels, synthetic.weights, synthetic.soft_labels) if t is not None]
    inputs = {"evaluator": cfg.identity(), "images": tensor_sha256(*parts), "data": dict(data.__dict__),
              "teacher": None if teacher is None else teacher.record}
    return KeptTrainings(StoredReport(Path(report), "evaluate", plain(inputs)), path)


def _manifest_record(folder: Path) -> dict:
    """The protocol record an exported folder carries ({} for folders made by other tools)."""
    from latentdd.export import MANIFEST_NAME, read_manifest

    return (read_manifest(folder).get("record") or {}) if (folder / MANIFEST_NAME).exists() else {}


def _ipc_of(synthetic) -> int | None:
    import torch

    counts = torch.bincount(synthetic.labels, minlength=synthetic.num_classes)
    return int(counts[0]) if bool((counts == counts[0]).all()) else None


def command(args, raw) -> int:
    import json

    from latentdd.data import dataset_info
    from latentdd.evaluate.trainer import channel_stats, evaluate_synthetic
    from latentdd.export import load_image_folder
    from latentdd.record import protocol_record

    data = data_config(args, raw)
    cfg, protocol = eval_config(args, raw)
    teacher_settings = teacher_config(args, raw) if cfg.uses_teacher else None  # checked before any work
    if args.json:  # the report is written after every training: a place it cannot go must fail now
        from latentdd.io import check_writable_file

        check_writable_file(Path(args.json), "the report (--json)")
    from latentdd.parallel import DataParallel, process_state

    state = process_state()  # under accelerate launch / torchrun: the processes each training is split over
    group, say = DataParallel.current(), (print if state.is_main_process else lambda *_: None)
    test, train = data.load("test"), data.load("train")
    size = int(test.load([0]).shape[-1])
    synthetic = load_image_folder(args.images, class_names=list(test.class_names), image_size=size,
                                  channels=int(test.load([0]).shape[1]), resize=args.images_resize)
    mean, std = channel_stats(train)
    teacher = None
    if cfg.loss == "teacher_kl" or cfg.loss == "static_kl" and synthetic.soft_labels is None:
        from latentdd.evaluate.teacher import describe, resolve_teacher

        with state.main_process_first():  # the first process fits (or loads) it; the others load its cache entry
            teacher = resolve_teacher(teacher_settings, train, test, val=data.load("val") if data.validation else None,
                                      progress=not args.quiet and state.is_main_process).to(state.device)
        say(f"teacher {describe(teacher)}")
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
        say(f"resuming: {len(done)} finished training(s) kept in {kept.path}")
    report = evaluate_synthetic(synthetic, test, cfg, mean=mean, std=std, flip=dataset_info(data.name).flip_augment,
                                record=record, progress=not args.quiet, teacher=teacher, done=done,
                                on_training=kept.add if kept else None, device=state.device, group=group,
                                relabel_dir=teacher_settings.cache_dir if teacher_settings else None)
    if not state.is_main_process:
        return 0
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
