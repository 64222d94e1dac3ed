"""ConvNet-D of the dataset-distillation literature, and the model registry of the evaluator (`MODELS`;
the other students live in `latentdd.nn.students`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from latentdd.errors import DataError
from latentdd.nn import students


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
            if size < 1:  # torch would fail at the first forward with "Output size is too small"
                raise DataError(f"a ConvNet of depth {depth} is too deep for {image_size} px images: each layer "
                                f"halves the feature map, and layer {d + 1} leaves none; the largest depth "
                                f"{image_size} px images allow is {d} (set depth, e.g. --depth, to at most {d})")
            channels = width
        self.features = nn.Sequential(*layers, nn.Flatten())  # (B, width * size * size)
        self.num_features = width * size * size
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, num_features): the embedding distillation methods match."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _convnet(in_channels: int, num_classes: int, image_size: int, *, depth: int | None = None, **kw) -> nn.Module:
    return ConvNet(in_channels, num_classes, image_size, depth=depth or default_depth(image_size), **kw)


CONVNET_NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")


@dataclass(frozen=True)
class Student:
    """A registered architecture: its builder (in_channels, num_classes, image_size, **options) and the
    width and norm it has when the evaluator leaves them unset (None)."""

    build: Callable[..., nn.Module]
    width: int
    norm: str
    norms: tuple[str, ...]
    has_depth: bool = False  # only ConvNet-D takes a depth; the others have theirs in the name
    about: str = ""

    def __call__(self, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        kwargs.setdefault("width", self.width)
        kwargs.setdefault("norm", self.norm)
        if kwargs["norm"] not in self.norms:
            raise DataError(f"norm {kwargs['norm']!r} is not available for this architecture; choose one of "
                            f"{', '.join(self.norms)}")
        return self.build(in_channels, num_classes, image_size, **kwargs)


MODELS: dict[str, Student] = {
    "convnet": Student(_convnet, 128, "instancenorm", CONVNET_NORMS, has_depth=True,
                       about="ConvNet-D (depth by image size: 3 up to 32 px, 4 at 64, 5 at 128)"),
    "resnet18": Student(students.resnet18, 64, "instancenorm", students.NORMS_2D,
                        about="ResNet-18 (3x3 stem, no max pool up to 64 px)"),
    "resnetap10": Student(students.resnetap10, 64, "instancenorm", students.NORMS_2D,
                          about="ResNetAP-10 (average-pool downsampling; IDC / Minimax)"),
    "vgg11": Student(students.vgg11, 64, "instancenorm", students.NORMS_2D,
                     about="VGG-11 (norm batchnorm: VGG-11-BN)"),
    "alexnet": Student(students.alexnet, 128, "none", students.NORMS_2D, about="AlexNet (DC's small-input variant)"),
}


def build_model(name: str, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """Look a model up in `MODELS` and build it; kwargs are its architecture options (None: its default)."""
    if name not in MODELS:
        raise DataError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](in_channels, num_classes, image_size, **kwargs)
