"""Shared fixtures: tiny image files written on the fly, tiny latents, torch on one thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    """pixels: (H, W) or (H, W, 3) uint8 -> a PNG at `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def write_png():
    """write_png(path, pixels) writes (H, W) gray or (H, W, 3) RGB uint8 pixels as a PNG."""
    return _write_png


@pytest.fixture
def make_class_tree():
    """make_class_tree(root, {class: count}, size=(H, W), rgb=True, seed=0) -> {path: pixels}.

    Writes `<root>/<class>/<i>.png` with random pixels and returns what each file holds.
    """

    def make(root: Path, counts: dict[str, int], size=(12, 12), rgb: bool = True, seed: int = 0):
        rng = np.random.default_rng(seed)
        written = {}
        for name, count in counts.items():
            for i in range(count):
                shape = (*size, 3) if rgb else size
                pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
                written[_write_png(root / name / f"{i:03d}.png", pixels)] = pixels
        return written

    return make


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the test (tiny networks: a second thread only adds synchronisation)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def latents():
    """60 tiny latents (2, 4, 4) of 3 classes, 20 each, class k shifted by k (the matching tests' data)."""
    from latentdd.latents.types import Latents

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, 4, 4, generator=g) + torch.arange(3).repeat_interleave(20).view(-1, 1, 1, 1)
    return Latents(x, torch.arange(3).repeat_interleave(20), ["a", "b", "c"])
