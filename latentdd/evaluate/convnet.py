"""ConvNet-D of the dataset-distillation literature, and the model registry of the evaluator."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from latentdd.errors import DataError


def _norm(kind: str, channels: int, spatial: int) -> nn.Module:
    if kind == "instancenorm":  # the papers' instance norm: one group per channel, affine
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "layernorm":
        return nn.LayerNorm([channels, spatial, spatial])
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise DataError(f"unknown norm {kind!r}; choose instancenorm, batchnorm, layernorm, groupnorm or none")


def _act(kind: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
    if kind not in acts:
        raise DataError(f"unknown activation {kind!r}; choose one of {sorted(acts)}")
    return acts[kind]()


def _pool(kind: str) -> nn.Module:
    pools = {"avgpool": lambda: nn.AvgPool2d(2, 2), "maxpool": lambda: nn.MaxPool2d(2, 2), "none": nn.Identity}
    if kind not in pools:
        raise DataError(f"unknown pooling {kind!r}; choose one of {sorted(pools)}")
    return pools[kind]()


def default_depth(image_size: int) -> int:
    """Depth the papers use per resolution: 3 up to 32 px, 4 at 64 px, 5 at 128 px, 6 beyond."""
    for depth, limit in ((3, 32), (4, 64), (5, 128)):
        if image_size <= limit:
            return depth
    return 6


class ConvNet(nn.Module):
    """depth x [conv3x3(width) -> norm -> act -> pool], then one linear classifier.

    Input (B, in_channels, S, S) -> logits (B, num_classes). 28 px inputs get padding 3
    in the first conv, as in the reference code, so a 28 px image yields the same
    32 px feature maps (and 2048 features at depth 3) as a 32 px one.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
        act: str = "relu",
        pool: str = "avgpool",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for d in range(depth):
            padding = 3 if d == 0 and image_size == 28 else 1
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=padding))
            size = size + 2 * padding - 2
            layers += [_norm(norm, width, size), _act(act)]
            if pool != "none":
                layers.append(_pool(pool))
                size //= 2
            channels = width
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, width * size * size)
        self.num_features = width * size * size
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, num_features): the embedding distillation methods match."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resnet18(in_channels: int, num_classes: int, image_size: int, *, norm: str = "instancenorm") -> nn.Module:
    """torchvision ResNet-18 (for 64 px and larger images); stem adapted to the channel count.

    norm instancenorm (the DC benchmark's "ResNet18") or batchnorm ("ResNet18BN").
    """
    from torchvision.models import resnet18

    norm_layer = {"batchnorm": nn.BatchNorm2d, "instancenorm": lambda c: nn.GroupNorm(c, c)}.get(norm)
    if norm_layer is None:
        raise DataError(f"resnet18 supports norm batchnorm or instancenorm, not {norm!r}")
    model = resnet18(num_classes=num_classes, norm_layer=norm_layer)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def _convnet(in_channels: int, num_classes: int, image_size: int, *, depth: int | None = None, **kw) -> nn.Module:
    return ConvNet(in_channels, num_classes, image_size, depth=depth or default_depth(image_size), **kw)


MODELS: dict[str, Callable[..., nn.Module]] = {"convnet": _convnet, "resnet18": _resnet18}


def build_model(name: str, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """Look a model up in `MODELS` and build it; kwargs are its architecture options."""
    if name not in MODELS:
        raise DataError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](in_channels, num_classes, image_size, **kwargs)
