"""ImageNet-1k class indices of a dataset's classes, for the models trained on ImageNet: DiT's class
conditioning (`latentdd.render.dit`) and a pretrained teacher's outputs (`latentdd.evaluate.teacher`).

A class maps through an explicit `class_map`, or through its WordNet id (e.g. "n01440764") looked
up in an ImageNet class list (`IMAGENET_CLASSES_HELP`).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from latentdd.errors import DataError, LatentDDError

_WNID = re.compile(r"n\d{8}")

IMAGENET_CLASSES_HELP = """\
an ImageNet-1k class list, one of:
  - imagenet_class_index.json (Keras / PyTorch examples): {"0": ["n01440764", "tench"], ...}
  - a JSON object {"n01440764": 0, ...} or a JSON list ["n01440764", ...] (index = position)
  - a text file with one class per line in index order, the WordNet id first
    (LOC_synset_mapping.txt of the ILSVRC devkit: "n01440764 tench, Tinca tinca", or synsets.txt)
  - the ImageNet train/ (or val/) folder with all 1000 <wnid>/ subfolders: the standard
    index of a class is its position among the sorted WordNet ids, which is how DiT's
    ImageFolder numbered them"""


def imagenet_class_index(wnid: str, mapping: str | Path | None = None) -> int:
    """The ImageNet-1k class index (0..999) of WordNet id `wnid` (e.g. "n01440764" -> 0).

    mapping: a class list in one of the formats of `IMAGENET_CLASSES_HELP`. No package
    installed here ships the 1000 WordNet ids (torchvision has only Imagenette's 10), so
    without one this raises LatentDDError saying what to pass.
    """
    if mapping is None:
        raise LatentDDError(f"cannot map WordNet id {wnid!r} to an ImageNet class index without {IMAGENET_CLASSES_HELP}")
    classes = load_imagenet_classes(mapping)
    if wnid not in classes:
        raise DataError(f"WordNet id {wnid!r} is not among the {len(classes)} classes listed in {mapping}")
    return classes[wnid]


def imagenet_indices(class_names: list[str], class_map, imagenet_classes, num_classes: int,
                     model: str, prefix: str = "") -> list[int] | None:
    """The ImageNet index of each dataset class, for a model with `num_classes` ImageNet outputs:
    `class_map` (one index per class), else the classes' WordNet ids looked up in `imagenet_classes`;
    None when the classes are not WordNet ids and there is no class_map (the caller says what to pass).
    DataError on a class_map of the wrong length or an index outside the model's classes."""
    if class_map is not None:
        index = [int(i) for i in class_map]
        if len(index) != len(class_names):
            raise DataError(f"{prefix}class_map has {len(index)} entries for {len(class_names)} classes")
    elif all(_WNID.fullmatch(name) for name in class_names):
        index = [imagenet_class_index(name, imagenet_classes) for name in class_names]
    else:
        return None
    bad = [i for i in index if not 0 <= i < num_classes]
    if bad:
        raise DataError(f"class indices {bad[:3]} are outside the {model}'s {num_classes} classes")
    return index


def load_imagenet_classes(mapping: str | Path) -> dict[str, int]:
    """{wnid: index} read from a class list (see `IMAGENET_CLASSES_HELP`)."""
    return dict(_load_imagenet_classes(str(Path(mapping).expanduser().resolve())))


@functools.lru_cache(maxsize=8)
def _load_imagenet_classes(path: str) -> tuple[tuple[str, int], ...]:
    source = Path(path)
    if source.is_dir():
        wnids = sorted(p.name for p in source.iterdir() if p.is_dir() and _WNID.fullmatch(p.name))
        if len(wnids) != 1000:
            raise DataError(
                f"{source} holds {len(wnids)} WordNet-id folders; the sorted order gives ImageNet-1k indices only "
                "with all 1000 (a subset such as Imagenette would be numbered 0..K-1, which DiT does not know)"
            )
        pairs = list(zip(wnids, range(1000)))
    elif source.is_file():
        try:
            text = source.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read the ImageNet class list {source}: {err}") from err
        pairs = _parse_json_classes(text, source) if source.suffix.lower() == ".json" else _parse_text_classes(text)
    else:
        raise LatentDDError(f"ImageNet class list {source} does not exist; expected {IMAGENET_CLASSES_HELP}")
    bad = [w for w, _ in pairs if not _WNID.fullmatch(w)]
    if bad or not pairs:
        raise DataError(f"{source} is not an ImageNet class list (bad WordNet ids such as {bad[:3]}); "
                        f"expected {IMAGENET_CLASSES_HELP}")
    indices = [i for _, i in pairs]
    if len(set(indices)) != len(indices) or len({w for w, _ in pairs}) != len(pairs) or min(indices) < 0:
        raise DataError(f"{source} lists a WordNet id or class index twice, or a negative index")
    return tuple(pairs)


def _parse_json_classes(text: str, source: Path) -> list[tuple[str, int]]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise DataError(f"{source} is not valid JSON: {err}") from err
    try:
        if isinstance(data, list):
            return [(str(w), i) for i, w in enumerate(data)]
        if all(isinstance(v, (list, tuple)) for v in data.values()):  # {"0": ["n01440764", "tench"]}
            return [(str(v[0]), int(k)) for k, v in data.items()]
        return [(str(k), int(v)) for k, v in data.items()]  # {"n01440764": 0}
    except (AttributeError, TypeError, ValueError, IndexError) as err:
        raise DataError(f"{source} is not an ImageNet class list: {err}; expected {IMAGENET_CLASSES_HELP}") from err


def _parse_text_classes(text: str) -> list[tuple[str, int]]:
    lines = [line.split()[0] for line in text.splitlines() if line.strip()]
    return [(w, i) for i, w in enumerate(lines)]
