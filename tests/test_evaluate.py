"""The evaluator: ConvNet shapes and size, DSA, the training loop's semantics, the report."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from latentdd.data import SyntheticImages, load_dataset
from latentdd.errors import DataError
from latentdd.evaluate import ConvNet, DiffAugment, DSAConfig, EvalConfig, build_model, evaluate_synthetic, train_model
from latentdd.evaluate import trainer
from latentdd.evaluate.trainer import channel_stats, top1_accuracy
from latentdd.nn.convnet import MODELS
from latentdd.nn.factorization import tile, untile

MEAN, STD = torch.tensor([0.5]), torch.tensor([0.25])


def conv_params(cin, cout):
    return cin * cout * 9 + cout


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 32)])
def test_convnet3_parameter_count_matches_the_papers_architecture(channels, size):
    net = ConvNet(channels, 10, size)
    norms = 3 * 2 * 128  # GroupNorm(128, 128) affine: weight + bias
    expected = conv_params(channels, 128) + 2 * conv_params(128, 128) + norms + (2048 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == expected
    x = torch.randn(2, channels, size, size)
    assert net(x).shape == (2, 10)
    assert net.embed(x).shape == (2, 2048)  # 128 x 4 x 4, also for 28 px (first conv pads 3)


def test_convnet_depth_follows_resolution_and_options():
    assert ConvNet(3, 5, 64, depth=4).num_features == 128 * 4 * 4
    net = build_model("convnet", 3, 5, 128)  # default depth 5 at 128 px
    assert net.num_features == 128 * 4 * 4
    net = ConvNet(1, 3, 32, width=16, depth=2, norm="batchnorm", pool="maxpool", act="leakyrelu")
    assert net(torch.randn(4, 1, 32, 32)).shape == (4, 3)
    assert net.num_features == 16 * 8 * 8
    with pytest.raises(DataError, match="unknown norm"):
        ConvNet(1, 3, 32, norm="weird")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_runs_forward_and_backward(name):
    net = build_model(name, 1, 4, 32)
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def single(group: str, **kw) -> DiffAugment:
    return DiffAugment(DSAConfig(strategy=group, **kw))


@pytest.mark.parametrize("group", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_dsa_keeps_shape_is_differentiable_and_seeded(group):
    x = torch.randn(5, 3, 16, 16, requires_grad=True)
    aug = single(group)
    y = aug(x, torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    again = aug(x.detach(), torch.Generator().manual_seed(3))
    assert torch.equal(y.detach(), again)


def test_dsa_siamese_applies_identical_transforms_to_two_batches():
    aug = DiffAugment()
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(6, 3, 16, 16)
    for _ in range(30):  # every group gets drawn
        a, b = aug.siamese(real[:2], real, generator=gen)
        assert torch.allclose(a, b[:2], atol=1e-6)
        if not torch.allclose(b[2:], real[2:]):  # not a no-op: a shared transform is applied
            assert not torch.allclose(b, real)


def test_dsa_independent_mode_draws_per_image_parameters():
    x = torch.randn(1, 1, 16, 16).repeat(8, 1, 1, 1)
    y = single("rotate")(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(y[0], y[1])


def test_dsa_crop_is_an_integer_shift_with_zero_fill():
    aug = single("crop")
    x = torch.arange(16.0).view(1, 1, 4, 4) + 1
    params = {"group": "crop", "dy": torch.tensor([1]), "dx": torch.tensor([-1]), "pad": (1, 1)}
    y = aug.apply(x, params)
    # out[i, j] = x[i + dy, j + dx]: content moves up one row and right one column
    assert torch.equal(y[0, 0, :3, 1:], x[0, 0, 1:, :3])
    assert (y[0, 0, 3] == 0).all() and (y[0, 0, :, 0] == 0).all()


def test_dsa_cutout_zeroes_one_square_of_half_the_side():
    aug = single("cutout")
    x = torch.ones(1, 1, 8, 8)
    y = aug.apply(x, {"group": "cutout", "cy": torch.tensor([4]), "cx": torch.tensor([4]), "size": (4, 4)})
    assert (y == 0).sum() == 16 and (y[0, 0, 2:6, 2:6] == 0).all()


def test_dsa_identity_parameters_leave_images_unchanged_and_flip_drops_for_digits():
    x = torch.randn(2, 3, 8, 8)
    aug = DiffAugment()
    one = torch.ones(2)
    assert torch.allclose(aug.apply(x, {"group": "scale", "sx": one, "sy": one}), x, atol=1e-5)
    assert torch.allclose(aug.apply(x, {"group": "rotate", "angle": torch.zeros(2)}), x, atol=1e-5)
    flipped = aug.apply(x, {"group": "flip", "flip": torch.tensor([True, False])})
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    assert "flip" not in DiffAugment(flip=False).groups
    with pytest.raises(DataError, match="unknown DSA groups"):
        DiffAugment(DSAConfig(strategy="color_warp"))


def tiny_config(**kw) -> EvalConfig:
    base = dict(width=16, depth=2, epochs=3, batch_size=64, dsa=False, num_eval=1, compile="off")
    return EvalConfig(**(base | kw))


def toy_set(n_per_class=6, classes=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n_per_class * classes, 1, size, size, generator=g)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return images, labels


def params_of(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_zero_weights_equal_dropping_those_images():
    """Full-batch training: a weighted mean over all images with weights 0/1 gives the same
    gradients as the plain mean over the images with weight 1."""
    images, labels = toy_set()
    keep = torch.arange(len(labels)) % 2 == 0
    cfg = tiny_config(epochs=4, batch_size=256)
    weighted = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=1,
                           weights=keep.float())
    dropped = train_model(images[keep], labels[keep], num_classes=3, config=cfg, mean=MEAN, std=STD, seed=1)
    assert torch.allclose(params_of(weighted), params_of(dropped), atol=1e-6)
    uniform = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=1,
                          weights=torch.full((len(labels),), 0.3))
    assert not torch.allclose(params_of(uniform), params_of(dropped), atol=1e-4)


def test_one_hot_soft_labels_equal_hard_labels():
    images, labels = toy_set()
    cfg = tiny_config(dsa=True)
    hard = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=2)
    soft = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=2,
                       soft_labels=torch.nn.functional.one_hot(labels, 3).float())
    assert torch.allclose(params_of(hard), params_of(soft), atol=1e-6)


def test_training_is_deterministic_per_seed():
    images, labels = toy_set()
    cfg = tiny_config(dsa=True)
    a = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=5)
    b = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=5)
    c = train_model(images, labels, num_classes=3, config=cfg, mean=MEAN, std=STD, seed=6)
    assert torch.equal(params_of(a), params_of(b))
    assert not torch.equal(params_of(a), params_of(c))


def test_lr_drops_tenfold_after_half_the_epochs(monkeypatch):
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    images, labels = toy_set()
    train_model(images, labels, num_classes=3, config=tiny_config(epochs=6, batch_size=256), mean=MEAN, std=STD)
    assert seen == pytest.approx([0.01] * 4 + [0.001] * 2)  # epochs 0..3 at lr, 4..5 at lr/10


def test_a_known_tiny_set_is_learned():
    """sklearn digits: a small ConvNet trained on the train split is far above chance (10%)."""
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    mean, std = channel_stats(train)
    cfg = tiny_config(width=32, depth=2, epochs=15, batch_size=64, lr=0.05)
    model = train_model(train.images, train.labels, num_classes=10, config=cfg, mean=mean, std=std)
    assert top1_accuracy(model, test, mean=mean, std=std) > 85.0


def test_evaluate_synthetic_reports_every_run_with_its_record():
    test = load_dataset("digits", "test")
    train = load_dataset("digits", "train")
    idx = torch.arange(0, 200)
    synthetic = SyntheticImages(train.images[idx], train.labels[idx], list(train.class_names),
                                weights=torch.rand(200))
    mean, std = channel_stats(train)
    report = evaluate_synthetic(synthetic, test, tiny_config(num_eval=2, use_weights=True, dsa=True), mean=mean,
                                std=std, flip=False, record={"method": {"name": "first-200"}}, progress=False)
    assert len(report.accuracies) == 2 and report.seeds == [0, 1]
    assert all(0.0 <= a <= 100.0 for a in report.accuracies)
    assert report.mean == pytest.approx(sum(report.accuracies) / 2)
    ev = report.record["evaluator"]
    assert ev["sample_weights"] is True and ev["labels"] == "hard" and ev["factorization"] is False
    assert "flip" not in ev["augmentation"] and ev["epochs"] == 3
    assert report.record["method"] == {"name": "first-200"}
    assert math.isfinite(report.std)


def test_evaluate_synthetic_rejects_mismatched_inputs():
    test = load_dataset("digits", "test")
    images, labels = toy_set(classes=10, size=8)
    good = SyntheticImages(images, labels, list(test.class_names))
    kw = dict(mean=MEAN, std=STD, progress=False)
    with pytest.raises(DataError, match="differ from the test split"):
        evaluate_synthetic(SyntheticImages(images, labels, [str(i) for i in range(9, -1, -1)]), test, tiny_config(), **kw)
    with pytest.raises(DataError, match="synthetic images are"):
        evaluate_synthetic(SyntheticImages(torch.rand(60, 1, 12, 12), labels, list(test.class_names)), test,
                           tiny_config(), **kw)
    with pytest.raises(DataError, match="carries no weights"):
        evaluate_synthetic(good, test, tiny_config(use_weights=True), **kw)
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        evaluate_synthetic(SyntheticImages(bad, labels, list(test.class_names)), test, tiny_config(), **kw)
    with pytest.raises(DataError, match="evaluator.epochs must be a positive integer"):
        tiny_config(epochs=0)


def test_tile_then_untile_gives_back_the_sources():
    g = torch.Generator().manual_seed(0)
    flat = torch.rand(8, 3, 1, 1, generator=g).expand(8, 3, 8, 8)  # constant sources survive pooling exactly
    tiled = tile(flat, 2)  # (2, 3, 8, 8): source t*N + n in tile t of image n
    assert tiled.shape == (2, 3, 8, 8)
    assert torch.equal(tiled[1, :, :4, 4:], flat[1 * 2 + 1, :, :4, :4])  # tile 1 = top right
    torch.testing.assert_close(untile(tiled, 2), flat)
    smooth = F.interpolate(torch.rand(8, 3, 3, 3, generator=g), size=(16, 16), mode="bilinear")
    rough = torch.rand(8, 3, 16, 16, generator=g)
    assert (untile(tile(smooth, 2), 2) - smooth).abs().mean() < 0.02
    assert (untile(tile(rough, 2), 2) - rough).abs().mean() > 0.1  # the test can tell
    assert untile(rough, 1) is rough
    with pytest.raises(DataError, match="must be multiples of 3"):
        untile(rough, 3)


def test_factor_2_trains_on_four_upsampled_tiles_per_image(monkeypatch):
    seen = {}

    def spy(images, labels, **kw):
        seen.update(images=images, labels=labels, weights=kw["weights"])
        return original(images, labels, **kw)

    original = trainer.train_model
    monkeypatch.setattr(trainer, "train_model", spy)
    test = load_dataset("digits", "test")
    images, labels = toy_set(n_per_class=2, classes=10, size=8)  # N = 20 stored images
    weights = torch.rand(20)
    report = evaluate_synthetic(SyntheticImages(images, labels, list(test.class_names), weights=weights), test,
                                tiny_config(factor=2, use_weights=True), mean=MEAN, std=STD, progress=False)
    assert seen["images"].shape == (80, 1, 8, 8)
    assert torch.equal(seen["labels"], labels.repeat(4))
    torch.testing.assert_close(seen["weights"].view(4, 20).sum(0), weights)  # each image keeps its weight
    top_right = F.interpolate(images[:, :, :4, 4:], size=(8, 8), mode="bilinear")
    torch.testing.assert_close(seen["images"][20:40], top_right)  # tile 1 of every image, upsampled
    assert report.record["evaluator"]["factorization"] == {"factor": 2, "images_trained": 80}
    with pytest.raises(DataError, match="must be multiples of 3"):
        evaluate_synthetic(SyntheticImages(images, labels, list(test.class_names)), test, tiny_config(factor=3),
                           mean=MEAN, std=STD, progress=False)
    for bad in (0, True, 1.5):
        with pytest.raises(DataError, match="factor must be a positive integer"):
            tiny_config(factor=bad)


@pytest.mark.slow
def test_compiled_training_matches_eager():
    images, labels = toy_set(size=16)
    eager = train_model(images, labels, num_classes=3, config=tiny_config(width=8), mean=MEAN, std=STD, seed=0)
    compiled = train_model(images, labels, num_classes=3, config=tiny_config(width=8, compile="on"), mean=MEAN,
                           std=STD, seed=0)
    assert torch.allclose(params_of(eager), params_of(compiled), atol=1e-4)


def test_class_consistency_judge_trains_caches_and_scores(tmp_path):
    from latentdd.data import ImageSet
    from latentdd.evaluate.consistency import JudgeConfig, class_consistency, fit_judge

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    images = (torch.rand(120, 1, 8, 8, generator=g) * 0.2 + labels.view(-1, 1, 1, 1) * 0.4).clamp(0, 1)
    train = ImageSet(images, labels, ["a", "b", "c"], name="toy", split="train")
    test = ImageSet(images[::4], labels[::4], ["a", "b", "c"], name="toy", split="test")
    config = JudgeConfig(width=8, epochs=20, lr=0.05, batch_size=32)
    judge = fit_judge(train, test, config, tmp_path)
    assert judge.report["test_accuracy"] == 100.0 and not judge.report["cached"]
    result = class_consistency(judge, images, labels)
    assert result["share"] == 100.0 and result["per_class"] == [100.0, 100.0, 100.0]
    wrong = class_consistency(judge, images[:40], torch.full((40,), 2))  # class-a images labelled c
    assert wrong["share"] == 0.0 and wrong["per_class"] == [None, None, 0.0]
    again = fit_judge(train, test, config, tmp_path)
    assert again.report["cached"] and torch.equal(again.model(images).argmax(1), judge.model(images).argmax(1))


def _compile_that_fails_on_call(n: int, calls: list):
    """A stand-in for torch.compile whose callable runs the model eagerly but raises on call n
    (counted over every compiled callable), as a failed recompile for a new shape does."""

    def fake_compile(model, **kw):
        def compiled(x):
            calls.append(tuple(x.shape))
            if len(calls) == n:
                raise RuntimeError("inductor: recompile failed for the new shape")
            return model(x)

        return compiled

    return fake_compile


def test_a_compile_failure_after_the_first_call_falls_back_to_eager_and_is_recorded(monkeypatch):
    calls: list = []
    monkeypatch.setattr(trainer.torch, "compile", _compile_that_fails_on_call(2, calls))
    test = load_dataset("digits", "test")
    images, labels = toy_set(n_per_class=3, classes=10, size=8)  # 30 images: batches of 16 and 14
    synthetic = SyntheticImages(images, labels, list(test.class_names))
    report = evaluate_synthetic(synthetic, test, tiny_config(compile="auto", batch_size=16, num_eval=2),
                                mean=MEAN, std=STD, progress=False)
    assert len(report.accuracies) == 2
    assert calls == [(16, 1, 8, 8), (14, 1, 8, 8)]  # after the failing 2nd call nothing ran compiled
    evaluator = report.record["evaluator"]
    assert evaluator["compile"] == "auto" and evaluator["compiled"] is False
    assert evaluator["compile_fallback"] == "train call 2: inductor: recompile failed for the new shape"
    with pytest.raises(RuntimeError, match="recompile failed"):  # compile on: no fallback
        calls.clear()
        evaluate_synthetic(synthetic, test, tiny_config(compile="on", batch_size=16), mean=MEAN, std=STD,
                           progress=False)


def test_the_record_says_whether_training_ran_compiled(monkeypatch):
    calls: list = []
    monkeypatch.setattr(trainer.torch, "compile", _compile_that_fails_on_call(0, calls))  # never fails
    test = load_dataset("digits", "test")
    images, labels = toy_set(n_per_class=2, classes=10, size=8)
    synthetic = SyntheticImages(images, labels, list(test.class_names))
    compiled = evaluate_synthetic(synthetic, test, tiny_config(compile="auto"), mean=MEAN, std=STD, progress=False)
    assert calls  # the compiled callable was used
    assert {k: compiled.record["evaluator"][k] for k in ("compile", "compiled", "compile_fallback")} == \
        {"compile": "auto", "compiled": True, "compile_fallback": None}
    calls.clear()
    eager = evaluate_synthetic(synthetic, test, tiny_config(compile="off"), mean=MEAN, std=STD, progress=False)
    assert not calls
    assert {k: eager.record["evaluator"][k] for k in ("compile", "compiled", "compile_fallback")} == \
        {"compile": "off", "compiled": False, "compile_fallback": None}
