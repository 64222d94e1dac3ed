"""Protocol presets: schedules, epochs by IPC, CutMix, crop/flip, the teacher's KL loss, the record."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentdd.data import SyntheticImages, load_dataset
from latentdd.errors import DataError
from latentdd.evaluate import EvalConfig, evaluate_synthetic, train_model
from latentdd.evaluate import trainer
from latentdd.evaluate.protocols import (MINIMAX_EPOCHS, PROTOCOLS, CropFlip, cutmix, cutmix_box, epochs_for_ipc,
                                         lr_factor)

MEAN, STD = torch.tensor([0.5]), torch.tensor([0.25])


def toy_set(n_per_class=4, classes=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_per_class * classes, 1, size, size, generator=g), torch.arange(classes).repeat_interleave(n_per_class)


def tiny(name: str, **kw) -> EvalConfig:
    return EvalConfig.preset(name, **({"width": 8, "depth": 2, "epochs": 3, "batch_size": 8, "num_eval": 1,
                                       "compile": "off"} | kw))


def params_of(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_step_schedule_is_dc_s_and_multistep_matches_torch_s_milestones():
    assert [lr_factor("step", e, 6, gamma=0.1) for e in range(6)] == [1, 1, 1, 1, 0.1, 0.1]
    assert [lr_factor("multistep", e, 12, gamma=0.2, milestones=(2 / 3, 5 / 6)) for e in range(12)] == \
        pytest.approx([1] * 8 + [0.2] * 2 + [0.04] * 2)
    for epochs in (1, 2, 3, 5, 6, 7, 12, 100, 299, 300, 1000, 1500, 2000, 3000):  # against torch's, as Minimax steps it
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2 * epochs // 3, 5 * epochs // 6], gamma=0.2)
        reference = []
        for _ in range(epochs):
            reference.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        ours = [lr_factor("multistep", e, epochs, gamma=0.2, milestones=(2 / 3, 5 / 6)) for e in range(epochs)]
        assert ours == pytest.approx(reference), epochs
    assert lr_factor("cosine", 0, 300, gamma=0.1) == 1.0
    assert lr_factor("cosine", 150, 300, gamma=0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 299, 300, gamma=0.1) < 1e-3


def test_minimax_epochs_follow_its_ipc_table():
    assert [epochs_for_ipc(MINIMAX_EPOCHS, i) for i in (1, 2, 10, 11, 50, 51, 200, 500, 501)] == \
        [3000, 2000, 2000, 1500, 1500, 1000, 1000, 500, 300]


def test_cutmix_pastes_one_box_from_a_partner_and_mixes_targets_and_weights_by_its_area():
    g = torch.Generator().manual_seed(4)
    x = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(4)])  # image i is constant i
    targets = F.one_hot(torch.arange(4), 4).float()
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mixed, mixed_targets, mixed_weights, r = cutmix(x, targets, weights, alpha=1.0, generator=g)
    assert 0 < r < 1
    for i in range(4):
        values = mixed[i].unique()
        own = (mixed[i] == i).float().mean().item()
        assert own == pytest.approx(1 - r)  # the box is the same for all, its share r
        partner = [v for v in values.tolist() if v != i]
        if partner:
            j = int(partner[0])
            assert mixed_targets[i, i] == pytest.approx(1 - r) and mixed_targets[i, j] == pytest.approx(r)
            assert mixed_weights[i] == pytest.approx((1 - r) * weights[i] + r * weights[j])
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(4))
    again = cutmix(x, targets, weights, alpha=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(again[0], mixed)
    y0, y1, x0, x1 = cutmix_box(10, 1.0, torch.Generator().manual_seed(0))  # lam 1: an empty box
    assert y1 - y0 == 0 and x1 - x0 == 0
    y0, y1, x0, x1 = cutmix_box(10, 0.0, torch.Generator().manual_seed(0))  # lam 0: a box of the whole side, clipped
    assert (y1 - y0) >= 5 and (x1 - x0) >= 5


def test_crop_flip_is_seeded_per_image_and_leaves_the_global_rng_alone():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    aug = CropFlip(16, (0.08, 1.0), flip=True)
    state = torch.random.get_rng_state()
    a = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.shape == x.shape and torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    assert not torch.allclose(a[0], x[0])
    whole = CropFlip(16, (1.0, 1.0), flip=False)(x, torch.Generator().manual_seed(1))  # the whole image, resized to itself
    torch.testing.assert_close(whole, x)
    assert CropFlip(16, None, flip=False)(x, torch.Generator()) is x


def test_the_teacher_kl_loss_is_t_squared_kl():
    logits_s, logits_t = torch.randn(5, 4), torch.randn(5, 4)
    T = 4.0
    step = trainer._Step(torch.nn.Identity(), "off")
    soft = F.softmax(logits_t / T, dim=1)
    loss = step._loss(logits_s, None, None, soft, T)
    expected = F.kl_div(F.log_softmax(logits_s / T, dim=1), soft, reduction="batchmean") * T**2
    torch.testing.assert_close(loss, expected)


def _spy_lrs(monkeypatch, optimizer_cls):
    seen = []
    original = optimizer_cls.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *a, **k)

    monkeypatch.setattr(optimizer_cls, "step", spy)
    return seen


def test_the_soft_preset_trains_with_adamw_on_a_cosine_schedule_and_the_teacher_s_labels(monkeypatch):
    seen = _spy_lrs(monkeypatch, torch.optim.AdamW)
    images, labels = toy_set()
    calls = []

    def teacher(x):  # images in [0, 1]: the trainer un-normalises before asking the teacher
        calls.append(x.detach().clone())
        return torch.zeros(len(x), 3)

    train_model(images, labels, num_classes=3, config=tiny("soft", epochs=4, batch_size=64), mean=MEAN, std=STD,
                teacher=teacher)
    assert seen == pytest.approx([1e-3 * lr_factor("cosine", e, 4, gamma=0.1) for e in range(4)])
    assert len(calls) == 4 and calls[0].shape == (12, 1, 8, 8)
    assert calls[0].min() >= -1e-5 and calls[0].max() <= 1 + 1e-5  # un-normalised: the crops of [0, 1] images
    with pytest.raises(DataError, match="needs a teacher"):
        train_model(images, labels, num_classes=3, config=tiny("soft"), mean=MEAN, std=STD)


def test_the_minimax_preset_takes_its_epochs_from_the_ipc_and_steps_at_its_milestones(monkeypatch):
    seen = _spy_lrs(monkeypatch, torch.optim.SGD)
    test = load_dataset("digits", "test")
    images, labels = toy_set(n_per_class=2, classes=10, size=8)  # IPC 2
    synthetic = SyntheticImages(images, labels, list(test.class_names))
    config = tiny("minimax", epochs=None, epochs_by_ipc={1: 9, 2: 6, 10: 3}, batch_size=64)
    report = evaluate_synthetic(synthetic, test, config, mean=MEAN, std=STD, flip=False, progress=False)
    assert seen == pytest.approx([0.01] * 4 + [0.002] + [0.0004])  # 6 epochs; milestones 2*6//3 = 4, 5*6//6 = 5
    ev = report.record["evaluator"]
    assert ev["epochs"] == 6 and ev["protocol"] == "minimax"
    assert ev["lr_schedule"] == "x0.2 at each of epochs [4, 5] (0-based)"
    assert ev["augmentation"] == "random_resized_crop(scale 0.5-1)+cutmix(p 1, beta 1)"  # flip dropped for digits


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_every_field_of_a_preset_is_in_the_record(name):
    config = EvalConfig.preset(name)
    record = config.record(32, flip=True, has_weights=False, has_soft=False, num_images=10)
    assert record["protocol"] == name and record["protocol_source"]
    for key, value in PROTOCOLS[name].items():
        stored = record["settings"][key]
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, dict):
            value = {str(k): v for k, v in value.items()}
        assert stored == value, key


def test_the_new_presets_are_deterministic_per_seed():
    images, labels = toy_set(size=16)
    cfg = tiny("minimax", epochs=2)
    a = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=3)
    b = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=3)
    c = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=4)
    assert torch.equal(params_of(a), params_of(b)) and not torch.equal(params_of(a), params_of(c))


def test_protocol_is_selectable_in_yaml_and_on_the_command_line():
    from latentdd.cli import eval_config, make_parser

    args = make_parser().parse_args(["evaluate", "--images", "x", "--protocol", "minimax", "--model", "resnetap10"])
    cfg, protocol = eval_config(args, {})
    assert protocol == "minimax" and cfg.protocol == "minimax" and cfg.model == "resnetap10" and cfg.cutmix == 1.0
    args = make_parser().parse_args(["evaluate", "--images", "x"])
    cfg, protocol = eval_config(args, {"evaluator": {"protocol": "soft", "temperature": 2}})
    assert protocol == "soft" and cfg.optimizer == "adamw" and cfg.temperature == 2.0 and cfg.epochs == 1000


@pytest.mark.bad_input
def test_bad_protocol_settings_are_refused_with_the_choices(capsys):
    from latentdd.cli import eval_config, main, make_parser

    args = make_parser().parse_args(["evaluate", "--images", "x"])
    with pytest.raises(DataError, match="dsa, dc, soft, soft-imagenet, static, minimax"):
        eval_config(args, {"evaluator": {"protocol": "sre2l"}})
    assert main(["evaluate", "--images", "x", "--protocol", "sre2l", "--quiet"]) == 2  # before any work
    assert "unknown protocol 'sre2l'" in capsys.readouterr().err
    with pytest.raises(DataError, match="crop_scale"):
        EvalConfig(crop_scale=(0.5, 0.2))
    with pytest.raises(DataError, match="optimizer must be one of sgd, adamw"):
        EvalConfig(optimizer="lamb")
    with pytest.raises(DataError, match="epochs is unset"):
        EvalConfig(epochs=None)
    with pytest.raises(DataError, match="unset use_soft_labels"):
        EvalConfig.preset("soft", use_soft_labels=True)


@pytest.mark.parametrize("path", ["configs/evaluate_soft.yaml", "configs/evaluate_imagenette_soft.yaml"])
def test_shipped_soft_configs_resolve(path):
    from pathlib import Path

    from latentdd.cli import eval_config, teacher_config, make_parser
    from latentdd.config import check_sections, load_yaml

    root = Path(__file__).resolve().parents[1]
    raw = load_yaml(root / path)
    check_sections(raw, ("dataset", "evaluator", "teacher"), "evaluate")
    args = make_parser().parse_args(["evaluate", "--images", "x", "--config", str(root / path)])
    cfg, protocol = eval_config(args, raw)
    teacher = teacher_config(args, raw)
    assert protocol == ("soft-imagenet" if "imagenette" in path else "soft") and cfg.loss == "teacher_kl"
    assert cfg.epochs == (300 if "imagenette" in path else 1000)
    if "imagenette" in path:
        assert cfg.crop_scale == (0.08, 1.0) and cfg.batch_size == 256  # SRe2L / RDED's recipe at 128 px and up
        assert cfg.model == "resnet18" and teacher.source == "torchvision:resnet18" and len(teacher.class_map) == 10
    else:
        assert teacher.source == "fit" and teacher.preset == "strong" and teacher.width == 128


def test_the_teacher_s_loss_can_join_another_preset_from_the_command_line():
    """The issue's quick trial: the DSA protocol's SGD schedule and augmentation, with a teacher's KL at T = 4."""
    from latentdd.cli import eval_config, make_parser

    args = make_parser().parse_args(["evaluate", "--images", "x", "--protocol", "dsa", "--loss", "teacher_kl",
                                     "--temperature", "2"])
    cfg, _ = eval_config(args, {})
    assert (cfg.loss, cfg.temperature, cfg.dsa, cfg.optimizer, cfg.epochs) == ("teacher_kl", 2.0, True, "sgd", 1000)
    record = cfg.record(28, flip=True, has_weights=False, has_soft=False)
    assert record["labels"].startswith("soft: the teacher's") and record["augmentation"].startswith("color_crop")


def test_soft_is_the_imagenet_recipe_with_the_small_image_crop_batch_and_epochs():
    soft, imagenet = PROTOCOLS["soft"], PROTOCOLS["soft-imagenet"]
    assert set(soft) == set(imagenet)
    assert {key for key in soft if soft[key] != imagenet[key]} == {"crop_scale", "batch_size", "epochs"}
    assert (soft["crop_scale"], soft["batch_size"], soft["epochs"]) == ((0.5, 1.0), 32, 1000)
    assert (imagenet["crop_scale"], imagenet["batch_size"], imagenet["epochs"]) == ((0.08, 1.0), 256, 300)
