"""Content keys: canonical settings and tensor bytes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentdd.cachekey import content_key, split_sha256, tensor_sha256


@dataclass
class _Settings:
    lr: float = 1.0
    blocks: tuple = (8, 16)


def test_settings_are_canonical():
    key = content_key("stage", config=_Settings())
    assert content_key("stage", config={"blocks": [8, 16], "lr": 1}) == key  # dataclass, tuple, 1.0 == 1
    assert content_key("stage", config=_Settings(lr=0.5)) != key
    assert content_key("other", config=_Settings()) != key


def test_tensors_are_keyed_by_dtype_shape_and_bytes():
    x = torch.arange(12, dtype=torch.float32)
    assert tensor_sha256(x) == tensor_sha256(x.clone())
    assert tensor_sha256(x) != tensor_sha256(x.view(3, 4))
    assert tensor_sha256(x) != tensor_sha256(x.double())
    y = x.clone()
    y[5] += 1e-6
    assert tensor_sha256(x) != tensor_sha256(y)
    # Same sums, different content (what the old BACON checkpoint key could not tell apart).
    assert tensor_sha256(torch.tensor([1.0, 2.0])) != tensor_sha256(torch.tensor([2.0, 1.0]))


def test_split_hash_does_not_depend_on_batching():
    images, labels = torch.rand(10, 1, 4, 4), torch.arange(10) % 3
    one = split_sha256([(images, labels)])
    assert split_sha256(zip(images.split(3), labels.split(3))) == one
    assert one[2] == 10
