"""Student architectures beyond ConvNet-D: ResNet-18, ResNetAP-10, VGG-11 and AlexNet.

Each takes images (B, in_channels, S, S) with S >= 28 and returns logits (B, num_classes);
`in_channels` 1 or 3. Registered in `latentdd.nn.convnet.MODELS` (the one registry
the evaluator, the teacher and the CLI read), with its native width and norm.

- ResNet-18: torchvision's layout and its `BasicBlock` (names conv1, bn1, layer1..4, fc,
  so torchvision's ImageNet state dict loads into width 64 with the ImageNet stem). For
  inputs of at most 64 px the stem is a 3x3 stride-1 conv without max pooling, as the
  CIFAR-style ResNets of DC / IDC / Minimax use; above 64 px it is the 7x7 stride-2 conv
  and 3x3 max pool of ImageNet.
- ResNetAP-10: ResNet-10 (one block per stage) whose blocks downsample by 2x2 average
  pooling instead of strided convs (`BasicBlockAP` of DC's networks.py, used by IDC,
  Minimax and IGD), instance norm by default.
- VGG-11 and AlexNet: the small-input variants of DC's networks.py that GLaD evaluates
  on (28 px inputs get padding in the first conv so their maps match 32 px ones). VGG-11's
  head average-pools to 1x1 and AlexNet's to 4x4, so both also take 64 px and larger.

`width` scales the channels of every stage (ResNets: width, 2, 4, 8 x width; VGG-11 the
same; AlexNet width, 1.5, 2, 1.5, 1.5 x width).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from latentdd.errors import DataError

NORMS_2D = ("instancenorm", "batchnorm", "none")


def norm2d(kind: str) -> Callable[[int], nn.Module]:
    """A factory channels -> norm layer: the papers' instance norm (GroupNorm, one group per
    channel, affine), BatchNorm2d, or none."""
    if kind == "instancenorm":
        return lambda c: nn.GroupNorm(c, c, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d
    if kind == "none":
        return lambda c: nn.Identity()
    raise DataError(f"unknown norm {kind!r} for this architecture; choose one of {', '.join(NORMS_2D)}")


class BasicBlockAP(nn.Module):
    """A residual block that downsamples by average pooling (DC's BasicBlock_AP).

    conv3x3 -> norm -> relu -> [avgpool 2x2 when stride 2] -> conv3x3 -> norm, plus a
    shortcut conv1x1 -> avgpool 2x2 -> norm when the shape changes; then relu.
    """

    def __init__(self, inplanes: int, planes: int, stride: int, norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.pool = nn.AvgPool2d(2, 2) if stride != 1 else nn.Identity()
        self.shortcut = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Sequential(conv1x1(inplanes, planes), nn.AvgPool2d(2, 2) if stride != 1 else nn.Identity(),
                                          norm_layer(planes))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.relu(self.bn1(self.conv1(x))))  # (B, planes, S/stride, S/stride)
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with four stages of `layers` blocks, widths (1, 2, 4, 8) x `width`.

    (B, C, S, S) -> logits (B, num_classes). `avgpool_downsample`: `BasicBlockAP` blocks
    (ResNetAP) instead of torchvision's strided `BasicBlock`. Stem: see the module docstring.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, layers=(2, 2, 2, 2), width: int = 64,
                 norm: str = "instancenorm", avgpool_downsample: bool = False) -> None:
        super().__init__()
        norm_layer = norm2d(norm)
        self.small_input = image_size <= 64
        if self.small_input:  # keep the resolution: a 32 px image would be 8 px after the ImageNet stem
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                s = stride if b == 0 else 1
                if avgpool_downsample:
                    stage.append(BasicBlockAP(inplanes, planes, s, norm_layer))
                else:
                    down = None
                    if s != 1 or inplanes != planes:
                        down = nn.Sequential(conv1x1(inplanes, planes, s), norm_layer(planes))
                    stage.append(BasicBlock(inplanes, planes, s, down, norm_layer=norm_layer))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        self.num_features = inplanes
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, 8 * width)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


def _first_padding(image_size: int, kernel: int) -> int:
    """Padding of the first conv: 28 px inputs are padded to 32 px maps as DC's networks do."""
    return kernel // 2 + 2 if image_size == 28 else kernel // 2


class VGG11(nn.Module):
    """VGG-11: [w, M, 2w, M, 4w, 4w, M, 8w, 8w, M, 8w, 8w, M] of conv3x3 -> norm -> relu, M a 2x2
    max pool; then average pool to 1x1 and one linear layer. (B, C, S, S) -> (B, num_classes), S >= 28."""

    plan = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, width: int = 64,
                 norm: str = "instancenorm") -> None:
        super().__init__()
        if image_size < 28:
            raise DataError(f"vgg11 needs images of at least 28 px (five 2x2 poolings); got {image_size} px")
        norm_layer = norm2d(norm)
        layers: list[nn.Module] = []
        channels, first = in_channels, True
        for step in self.plan:
            if step == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            padding = _first_padding(image_size, 3) if first else 1
            layers += [nn.Conv2d(channels, width * step, 3, padding=padding), norm_layer(width * step), nn.ReLU(inplace=True)]
            channels, first = width * step, False
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 8w)
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class AlexNet(nn.Module):
    """DC's small-input AlexNet: conv5x5(w) M, conv5x5(1.5w) M, conv3x3(2w), conv3x3(1.5w), conv3x3(1.5w) M,
    each conv -> norm -> relu (DC's has no norm: norm none), then average pool to 4x4 (a no-op at 32 px)
    and one linear layer on the 1.5w x 4 x 4 features. (B, C, S, S) -> (B, num_classes), S >= 28."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, width: int = 128,
                 norm: str = "none") -> None:
        super().__init__()
        if image_size < 28:
            raise DataError(f"alexnet needs images of at least 28 px; got {image_size} px")
        norm_layer = norm2d(norm)
        w1, w2, w3 = width, width * 3 // 2, width * 2

        def conv(cin, cout, kernel, padding):
            return [nn.Conv2d(cin, cout, kernel, padding=padding), norm_layer(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(in_channels, w1, 5, _first_padding(image_size, 5)), nn.MaxPool2d(2, 2),
            *conv(w1, w2, 5, 2), nn.MaxPool2d(2, 2),
            *conv(w2, w3, 3, 1), *conv(w3, w2, 3, 1), *conv(w2, w2, 3, 1), nn.MaxPool2d(2, 2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),  # (B, 1.5w * 16)
        )
        self.num_features = w2 * 16
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def resnet18(in_channels: int, num_classes: int, image_size: int, *, width: int = 64, norm: str = "instancenorm"):
    return ResNet(in_channels, num_classes, image_size, layers=(2, 2, 2, 2), width=width, norm=norm)


def resnetap10(in_channels: int, num_classes: int, image_size: int, *, width: int = 64, norm: str = "instancenorm"):
    return ResNet(in_channels, num_classes, image_size, layers=(1, 1, 1, 1), width=width, norm=norm,
                  avgpool_downsample=True)


def vgg11(in_channels: int, num_classes: int, image_size: int, *, width: int = 64, norm: str = "instancenorm"):
    return VGG11(in_channels, num_classes, image_size, width=width, norm=norm)


def alexnet(in_channels: int, num_classes: int, image_size: int, *, width: int = 128, norm: str = "none"):
    return AlexNet(in_channels, num_classes, image_size, width=width, norm=norm)
