"""The `latentdd fit-teacher` command: its body (every flag it takes is a config key)."""

from __future__ import annotations

from latentdd.cli.sections import (
    data_config,
    teacher_config,
)

ABOUT = ("Train a teacher (any registered student architecture) on the real train split from a preset "
         "(--teacher-preset); cached by content, checkpointed each epoch (a killed fit resumes), its test "
         "accuracy recorded.")
EXAMPLES = (
    "examples:\n  latentdd fit-teacher --dataset fashion_mnist\n"
    "  latentdd fit-teacher --dataset fashion_mnist --validation 0.1 --teacher-preset strong\n"
    "  latentdd fit-teacher --dataset fashion_mnist --model resnet18 --epochs 10 --validation 0.1\n"
    "  latentdd evaluate --images runs/random_ipc10 --dataset fashion_mnist --protocol soft"
)


def command(args, raw) -> int:
    from latentdd.evaluate.teacher import describe, fit_teacher

    data = data_config(args, raw)
    config = teacher_config(args, raw, {"source": "fit"})
    train, test = data.load("train"), data.load("test")
    teacher = fit_teacher(train, test, config, val=data.load("val") if data.validation else None,
                          progress=not args.quiet)
    val = teacher.record.get("val_accuracy")
    print(f"teacher {describe(teacher)}" + (f"; val accuracy {val:.2f}%" if val is not None else ""))
    print(f"use it with: latentdd evaluate --images DIR --dataset {data.name} --protocol soft "
          f"--teacher {teacher.record['directory']}")
    return 0
