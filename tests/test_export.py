"""Synthetic sets to image folders and back: exactness, atomic writes, foreign folders, tampering."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from latentdd import export as export_module
from latentdd.data import SyntheticImages
from latentdd.errors import DataError, DatasetNotFoundError, LatentDDError
from latentdd.export import (
    MANIFEST_NAME,
    OutputExistsError,
    class_folder_name,
    class_folder_names,
    export_image_folder,
    load_image_folder,
    read_manifest,
)

CLASSES = ["T-shirt/top", "Trouser", "Bag"]


def make_synthetic(channels: int = 3, n_per_class: int = 2, extras: bool = True, seed: int = 0) -> SyntheticImages:
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * len(CLASSES)
    images = torch.rand(n, channels, 10, 10, generator=g)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = -0.5, 1.5  # out of range: clamped on export
    labels = torch.arange(len(CLASSES)).repeat(n_per_class)  # interleaved: order must survive
    return SyntheticImages(
        images,
        labels,
        list(CLASSES),
        name="fashion_mnist",
        split="train",
        source="test",
        weights=torch.rand(n, generator=g) if extras else None,
        soft_labels=torch.softmax(torch.randn(n, len(CLASSES), generator=g), dim=1) if extras else None,
        meta={"method": "dm", "params": {"ipc": n_per_class, "lr": 0.1}} if extras else {},
    )


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_is_bit_exact(tmp_path, channels):
    synthetic = make_synthetic(channels)
    record = {"dataset": "fashion_mnist", "ipc": 2, "seeds": [0, 1], "wall_time_s": {"distill": 1.5}}
    out = export_image_folder(synthetic, tmp_path / "out", record=record)
    assert out == tmp_path / "out" and siblings(out) == ["out"]  # no temp folder left
    back = load_image_folder(out)
    expected = torch.round(synthetic.images.clamp(0, 1) * 255) / 255
    assert back.images.dtype == torch.float32 and torch.equal(back.images, expected)
    assert torch.equal(back.labels, synthetic.labels)
    assert torch.equal(back.weights, synthetic.weights)
    assert torch.equal(back.soft_labels, synthetic.soft_labels)
    assert back.meta == synthetic.meta and back.class_names == CLASSES
    assert (back.name, back.split, back.source) == ("fashion_mnist", "train", str(out))
    manifest = read_manifest(out)
    assert manifest["record"] == record and manifest["image_shape"] == [channels, 10, 10]
    assert manifest["class_folders"] == ["T-shirt_top", "Trouser", "Bag"]
    assert [e["file"] for e in manifest["images"][:2]] == ["T-shirt_top/000000.png", "Trouser/000001.png"]
    assert sorted(p.name for p in (out / "Bag").iterdir()) == ["000002.png", "000005.png"]


def test_round_trip_without_weights_or_soft_labels(tmp_path):
    back = load_image_folder(export_image_folder(make_synthetic(extras=False), tmp_path / "o"))
    assert back.weights is None and back.soft_labels is None and back.meta == {}
    assert read_manifest(tmp_path / "o")["record"] is None


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    first = export_image_folder(make_synthetic(seed=0), tmp_path / "out")
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    with pytest.raises(OutputExistsError, match="choose another --out or pass --overwrite") as info:
        export_image_folder(make_synthetic(seed=1), tmp_path / "out")
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, LatentDDError)
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    export_image_folder(make_synthetic(seed=1, n_per_class=3), tmp_path / "out", overwrite=True)
    back = load_image_folder(tmp_path / "out")
    assert len(back) == 9 and siblings(first) == ["out"]  # replaced; old copy and temp removed
    expected = torch.round(make_synthetic(seed=1, n_per_class=3).images.clamp(0, 1) * 255) / 255
    assert torch.equal(back.images, expected)


def test_overwrite_refuses_a_folder_latentdd_did_not_write(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(LatentDDError, match="refusing to replace"):
        export_image_folder(make_synthetic(), precious, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    real = export_module._png_bytes

    def flaky(pixels):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(pixels)

    monkeypatch.setattr(export_module, "_png_bytes", flaky)
    with pytest.raises(OSError, match="disk full"):
        export_image_folder(make_synthetic(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def write_foreign_folder(root: Path, write_png, folders: dict[str, int], size=(10, 10)) -> None:
    rng = np.random.default_rng(0)
    for folder, count in folders.items():
        for i in range(count):
            write_png(root / folder / f"img{i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def test_folder_without_manifest_maps_folders_to_given_class_names(tmp_path, write_png):
    write_foreign_folder(tmp_path / "f", write_png, {"T-shirt_top": 2, "Bag": 3})
    back = load_image_folder(tmp_path / "f", class_names=CLASSES)
    assert back.class_names == CLASSES and back.labels.tolist() == [0, 0, 2, 2, 2]
    assert back.images.shape == (5, 3, 10, 10) and back.weights is None and back.soft_labels is None
    plain = load_image_folder(tmp_path / "f")
    assert plain.class_names == ["Bag", "T-shirt_top"] and plain.labels.tolist() == [0, 0, 0, 1, 1]


def test_unknown_class_folder_lists_unknown_and_expected(tmp_path, write_png):
    write_foreign_folder(tmp_path / "f", write_png, {"Trouser": 1, "Sneaker": 1})
    with pytest.raises(DataError, match="match no class: Sneaker; expected folders named: T-shirt_top, Trouser, Bag"):
        load_image_folder(tmp_path / "f", class_names=CLASSES)


def test_manifest_class_names_must_match_the_ones_asked_for(tmp_path):
    out = export_image_folder(make_synthetic(), tmp_path / "out")
    with pytest.raises(DataError, match="has classes"):
        load_image_folder(out, class_names=["a", "b", "c"])


def test_tampered_file_fails_its_checksum(tmp_path, write_png):
    out = export_image_folder(make_synthetic(), tmp_path / "out")
    write_png(out / "Trouser" / "000004.png", np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"000004.png was changed after export"):
        load_image_folder(out)


def test_corrupt_png_is_named(tmp_path, write_png):
    write_foreign_folder(tmp_path / "f", write_png, {"a": 2})
    (tmp_path / "f" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="broken.png"):
        load_image_folder(tmp_path / "f")


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        load_image_folder(tmp_path / "nowhere")


def test_image_size_policy_on_load(tmp_path, write_png):
    out = export_image_folder(make_synthetic(channels=1), tmp_path / "out")
    padded = load_image_folder(out, image_size=14, channels=3)
    assert padded.images.shape == (6, 3, 14, 14) and padded.images[:, :, :2].abs().sum() == 0
    with pytest.raises(DataError, match="are 10x10 but the dataset is 14x14; pass resize .*--images-resize for `latentdd evaluate"):
        load_image_folder(out, image_size=14, resize=None)
    write_foreign_folder(tmp_path / "f", write_png, {"a": 1}, size=(12, 12))
    with pytest.raises(DataError, match="is 12x12 but the dataset is 10x10; pass resize .*--images-resize for `latentdd evaluate"):
        load_image_folder(tmp_path / "f", image_size=10, resize=None)


def test_manifest_from_a_newer_latentdd_is_refused(tmp_path):
    out = export_image_folder(make_synthetic(), tmp_path / "out")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["format_version"] = 99
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="format_version 99"):
        load_image_folder(out)


def test_class_folder_name_rule():
    assert class_folder_name("T-shirt/top") == "T-shirt_top"
    assert class_folder_name("Ankle boot") == "Ankle boot"
    assert class_folder_name('a:b*c?"<>|\\d') == "a_b_c______d"
    assert class_folder_name(".hidden") == "_.hidden" and class_folder_name("..") == "_.."
    assert class_folder_name("") == "_"
    assert class_folder_names(["a/b", "a_b", "c"]) == ["a_b__0", "a_b__1", "c"]
    assert class_folder_names(["Bag", "bag"]) == ["Bag__0", "bag__1"]  # case-insensitive filesystems


def test_colliding_class_names_round_trip(tmp_path):
    images = torch.rand(2, 1, 4, 4)
    synthetic = SyntheticImages(images, torch.tensor([0, 1]), ["a/b", "a_b"])
    back = load_image_folder(export_image_folder(synthetic, tmp_path / "o"))
    assert back.class_names == ["a/b", "a_b"] and back.labels.tolist() == [0, 1]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_b__0", "a_b__1", MANIFEST_NAME]
