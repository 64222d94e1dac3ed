"""scripts/make_scale_fixture.py: the generated folders load through `imagefolder`, are learnable,
reproducible, and never replace a folder latentdd did not write."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

from latentdd.data import ImageTransform, load_dataset
from latentdd.errors import LatentDDError, OutputExistsError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_scale_fixture.py"


@pytest.fixture(scope="module")
def fixture_script():
    spec = importlib.util.spec_from_file_location("make_scale_fixture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def _procedural(script, out, **kw):
    options = {"classes": 5, "per_class": 3, "val_per_class": 2, "size": 32, "seed": 0} | kw
    return script.make_fixture("procedural", out, progress=False, **options)


def test_procedural_folder_loads_and_a_nearest_centroid_beats_chance(fixture_script, tmp_path):
    root = _procedural(fixture_script, tmp_path / "proc")
    train = load_dataset("imagefolder", "train", root=root)
    val = load_dataset("imagefolder", "test", root=root)  # the val/ folder, labelled by train's classes
    assert len(train) == 15 and len(val) == 10 and train.class_names == [f"class{k:04d}" for k in range(5)]
    assert torch.equal(torch.bincount(train.labels), torch.full((5,), 3))
    x, y = train.load(range(len(train))), train.labels  # (15, 3, 32, 32)
    assert x.shape == (15, 3, 32, 32)
    centroids = torch.stack([x[y == k].mean(0) for k in range(5)]).flatten(1)  # (5, d)
    v = val.load(range(len(val))).flatten(1)
    predicted = torch.cdist(v, centroids).argmin(1)
    accuracy = (predicted == val.labels).float().mean().item()
    assert accuracy >= 0.8, accuracy  # chance is 0.2
    # Images of one class differ (jitter and noise), so the task is not a lookup.
    assert not torch.equal(x[0], x[1])


def test_procedural_folder_is_reproducible_by_seed(fixture_script, tmp_path):
    a = _digest(_procedural(fixture_script, tmp_path / "a"))
    assert _digest(_procedural(fixture_script, tmp_path / "b")) == a
    assert _digest(_procedural(fixture_script, tmp_path / "c", seed=1)) != a


def test_procedural_classes_are_distinct(fixture_script):
    params = [fixture_script.class_params(0, k) for k in range(1000)]
    keys = {(p["shape"], tuple(round(c, 2) for c in p["fg"] + p["bg"])) for p in params}
    assert len(keys) == 1000


def test_fashion64_matches_the_dataset_at_64_px_rgb(fixture_script, tmp_path):
    root = fixture_script.make_fixture("fashion64", tmp_path / "f", progress=False, size=64, per_class=2,
                                       val_per_class=1, root=None)
    train = load_dataset("imagefolder", "train", root=root)
    assert len(train) == 20 and len(load_dataset("imagefolder", "test", root=root)) == 10
    reference = load_dataset("fashion_mnist", "train")  # native 28 px gray; one image is transformed below
    first = int(Path(train.files[0]).stem)  # files are named by their index in the dataset
    # imagefolder labels classes by sorted folder name; the folder says which Fashion-MNIST class it is.
    assert train.class_names == sorted(["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                        "Sneaker", "Bag", "Ankle boot"])
    assert Path(train.files[0]).parent.name == "Ankle boot" and int(reference.labels[first]) == 9
    expected = ImageTransform(image_size=64, channels=3, resize="resize")(reference.images[first : first + 1])[0]
    assert (train.load([0])[0] - expected).abs().max() <= 0.5 / 255 + 1e-6


@pytest.mark.bad_input
def test_refuses_a_foreign_folder_and_an_existing_one_without_overwrite(fixture_script, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExistsError):
        _procedural(fixture_script, foreign, classes=2, per_class=1, val_per_class=1)
    with pytest.raises(LatentDDError, match="refusing to replace"):
        _procedural(fixture_script, foreign, classes=2, per_class=1, val_per_class=1, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious" and not (foreign / "train").exists()
    assert fixture_script.main(["procedural", "--out", str(foreign), "--classes", "2", "--quiet", "--overwrite"]) == 2

    ours = _procedural(fixture_script, tmp_path / "ours", classes=2, per_class=1, val_per_class=1)
    with pytest.raises(OutputExistsError):
        _procedural(fixture_script, ours, classes=2, per_class=1, val_per_class=1)
    _procedural(fixture_script, ours, classes=3, per_class=1, val_per_class=1, overwrite=True)
    assert len(load_dataset("imagefolder", "train", root=ours).class_names) == 3
    assert not list(tmp_path.glob("*.tmp-*"))  # nothing left beside the outputs
