"""The student registry: every architecture runs at 28 / 32 / 64 px, 1 and 3 channels; ResNet-18 is torchvision's."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from latentdd.errors import DataError
from latentdd.evaluate import EvalConfig, build_model
from latentdd.nn.convnet import MODELS
from latentdd.nn.students import BasicBlockAP

TINY_WIDTH = {"convnet": 8, "resnet18": 4, "resnetap10": 4, "vgg11": 4, "alexnet": 8}


def test_the_registry_holds_the_issue_s_students():
    assert set(MODELS) == {"convnet", "resnet18", "resnetap10", "vgg11", "alexnet"}
    assert set(TINY_WIDTH) == set(MODELS)  # a new student must join the parametrised test below


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_student_runs_forward_and_backward(name, channels, size):
    torch.manual_seed(0)
    net = build_model(name, channels, 5, size, width=TINY_WIDTH[name])
    x = torch.randn(2, channels, size, size, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 5)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("norm,layer", [("instancenorm", nn.GroupNorm), ("batchnorm", nn.BatchNorm2d)])
@pytest.mark.parametrize("name", ["convnet", "resnet18", "resnetap10", "vgg11", "alexnet"])
def test_norm_variants_build_the_named_layer(name, norm, layer):
    net = build_model(name, 3, 4, 32, width=TINY_WIDTH[name], norm=norm)
    assert any(isinstance(m, layer) for m in net.modules())
    bare = build_model(name, 3, 4, 32, width=TINY_WIDTH[name], norm="none")
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in bare.modules())


def test_resnet18_is_torchvision_s_layout_and_takes_its_weights():
    """Width 64, batch norm, above 64 px (the ImageNet stem): torchvision's resnet18 state dict loads
    strictly and both networks give the same logits."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    reference = resnet18(num_classes=7).eval()
    ours = build_model("resnet18", 3, 7, 96, norm="batchnorm").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(ours(x), reference(x))


def test_small_inputs_get_the_3x3_stem_without_max_pool():
    small, large = build_model("resnet18", 1, 3, 32, width=4), build_model("resnet18", 1, 3, 128, width=4)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2) and isinstance(large.maxpool, nn.MaxPool2d)
    assert small.conv1.in_channels == 1


def test_resnetap10_downsamples_by_average_pooling_only():
    net = build_model("resnetap10", 3, 3, 32, width=4)
    blocks = [m for m in net.modules() if isinstance(m, BasicBlockAP)]
    assert len(blocks) == 4  # ResNet-10: one block per stage
    assert all(m.stride == (1, 1) for m in net.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.AvgPool2d) for m in net.modules()) == 6  # 3 downsampling blocks x (path + shortcut)
    assert net.embed(torch.randn(2, 3, 32, 32)).shape == (2, 32)


def test_the_default_evaluator_is_still_convnet3_and_its_identity_holds_every_setting():
    """The default resolves to ConvNet-3; the identity (what names an evaluation in a content key) holds every
    field but the protocol label, the architecture's width and norm resolved, so any setting changes it; the
    relabel settings only when relabelling (online labels keep the identity they had before it existed)."""
    identity = EvalConfig().identity()
    fields = dataclasses.asdict(EvalConfig())
    assert identity == {k: v for k, v in fields.items() if k not in ("protocol", "relabel", "relabel_topk")} | \
        {"width": 128, "norm": "instancenorm"}
    assert EvalConfig.preset("dc").identity() == identity | {"epochs": 300, "dsa": False}
    assert EvalConfig(protocol="dc").identity() == identity  # a label only
    assert EvalConfig(optimizer="adamw").identity() == identity | {"optimizer": "adamw"}
    assert EvalConfig().arch_kwargs(28) == {"width": 128, "depth": 3, "norm": "instancenorm", "act": "relu",
                                            "pool": "avgpool"}
    assert EvalConfig(model="resnet18").identity()["width"] == 64
    assert EvalConfig.preset("soft").identity() != EvalConfig().identity()


@pytest.mark.bad_input
def test_model_norm_and_depth_are_validated_with_the_choices():
    with pytest.raises(DataError, match="convnet, resnet18, resnetap10, vgg11, alexnet"):
        EvalConfig(model="vit")
    with pytest.raises(DataError, match="instancenorm, batchnorm, none"):
        EvalConfig(model="alexnet", norm="layernorm")
    with pytest.raises(DataError, match="depth applies to convnet only"):
        EvalConfig(model="resnet18", depth=4)
    with pytest.raises(DataError, match="at least 28 px"):
        build_model("vgg11", 1, 3, 16)
