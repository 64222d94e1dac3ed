"""Where a teacher fit stands: each finished epoch's seconds, mean loss and val accuracy, read from its checkpoint
(or, once it is done, its teacher.json), written as JSON. It reads; it never trains or tests.

    python scripts/teacher_progress.py --preset strong --out results/teacher_fashion_mnist/strong_progress.json
    python scripts/teacher_progress.py --config results/teacher_fashion_mnist/recipes/strong_crop08.yaml \
        --out results/teacher_fashion_mnist/strong_crop08_progress.json

The fit is found by content: the key `fit_teacher` would compute for these settings and the train split
(train minus val, dataset.validation), under cache_dir/teacher/.partial-<key16>/ while it runs and
cache_dir/teacher/<key16>/ when finished. The test accuracy of a finished fit is left out: the recipe is
chosen on val, and the test split is read once, in the final record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from latentdd.cachekey import content_key
from latentdd.checkpoint import read_state
from latentdd.config import DataConfig, load_yaml
from latentdd.evaluate.teacher import TEACHER_VERSION, TeacherConfig, _split_identity
from latentdd.io import atomic_write_json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--validation", type=float, default=0.1)
    p.add_argument("--preset", default="strong")
    p.add_argument("--config", type=Path, help="a fit-teacher recipe (its dataset: and teacher: sections) instead of "
                   "--dataset / --validation / --preset")
    p.add_argument("--cache-dir", default="~/.cache/latentdd")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    recipe = load_yaml(args.config) if args.config else {}
    data = recipe.get("dataset") or {"name": args.dataset, "validation": args.validation}
    config = TeacherConfig(**({"preset": args.preset} | recipe.get("teacher", {})), cache_dir=args.cache_dir)
    train = DataConfig(**data).load("train")
    key = content_key("teacher", version=TEACHER_VERSION, settings=config.fit_settings(),
                      train=_split_identity(train), class_names=list(train.class_names))
    root = Path(args.cache_dir).expanduser() / "teacher"
    done, partial = root / key[:16] / "teacher.json", root / f".partial-{key[:16]}" / "fit.safetensors"
    if done.is_file():
        epochs, state = json.loads(done.read_text())["epochs"], "finished"
    else:
        saved = read_state(partial, otherwise="reporting no epochs") if partial.is_file() else None
        epochs, state = (saved or {}).get("epoch_log", []), "running or interrupted" if saved else "not started"
    seconds = [e["seconds"] for e in epochs]
    record = {"preset": config.preset, "key": key, "settings": config.fit_settings(), "state": state,
              "epochs_done": len(epochs), "epochs_total": config.epochs,
              "mean_seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
              "epochs": [{"epoch": e["epoch"] + 1, "seconds": round(e["seconds"], 1), "loss": round(e["loss"], 4),
                          "val_accuracy": e.get("val_accuracy")} for e in epochs],
              "read_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/teacher_progress.py " + " ".join(sys.argv[1:])}
    atomic_write_json(args.out, record)
    print(json.dumps({k: record[k] for k in ("key", "state", "epochs_done", "epochs_total",
                                             "mean_seconds_per_epoch")}))
    for e in record["epochs"]:
        print(f"epoch {e['epoch']}: {e['seconds']} s, loss {e['loss']}, val {e['val_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
