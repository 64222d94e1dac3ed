"""The teacher's labels computed once and replayed (latentdd.evaluate.relabel, FKD's relabel)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentdd.data import SyntheticImages, load_dataset
from latentdd.errors import DataError
from latentdd.evaluate import EvalConfig, evaluate_synthetic
from latentdd.evaluate.relabel import relabel, view_generator
from latentdd.evaluate.teacher import TeacherConfig, fit_teacher
from latentdd.evaluate.trainer import _normalise, augmentations, channel_stats, epoch_batches, train_model

SOFT = dict(width=8, depth=2, compile="off", protocol="soft", epochs=3, batch_size=8, dsa=False, optimizer="adamw",
            lr=1e-3, weight_decay=0.01, schedule="cosine", crop_scale=(0.5, 1.0), hflip=True, cutmix=1.0,
            loss="teacher_kl", num_eval=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher = fit_teacher(train, test, TeacherConfig(preset="quick", width=8, depth=2, epochs=2, lr=3e-3, batch_size=64,
                                                         cache_dir=str(tmp_path_factory.mktemp("cache"))))
    finally:
        torch.set_num_threads(threads)
    mean, std = channel_stats(train)
    return train, test, teacher, mean, std


class Counting:
    """A teacher that counts the images it labels."""

    def __init__(self, teacher) -> None:
        self.teacher, self.images = teacher, 0

    def __call__(self, images):
        self.images += len(images)
        return self.teacher(images)

    def __getattr__(self, name):
        return getattr(self.teacher, name)


def test_the_stored_labels_are_the_teacher_s_of_the_views_the_trainer_draws_again(setup, tmp_path):
    train, _, teacher, mean, std = setup
    images, labels = train.images[:20], train.labels[:20]
    config = EvalConfig(**SOFT)
    out = relabel(images, labels, config=config, teacher=teacher, mean=mean, std=std, flip=True, views=3, topk=10,
                  seed=0, num_classes=10, cache_dir=tmp_path)
    assert out.values.shape == (3, 20, 10) and out.record["mode"] == "cached"
    augment, crop_flip = augmentations(config, images.shape[-1], True)
    x_all = _normalise(images, mean, std)
    view, position = 2, 0
    for idx, x, *_ in epoch_batches(x_all, labels, None, None, config, 10, augment, crop_flip, view_generator(0, view)):
        want = F.softmax(teacher(x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)) / 4.0, dim=1)
        torch.testing.assert_close(out.labels(view, position, len(idx), 4.0), want)
        position += len(idx)
    assert position == 20
    # Cached by content: a second call reads the file; another number of views is another relabel.
    again = relabel(images, labels, config=config, teacher=Counting(teacher), mean=mean, std=std, flip=True, views=3,
                    topk=10, seed=0, num_classes=10, cache_dir=tmp_path)
    assert torch.equal(again.values, out.values) and again.record["path"] == out.record["path"]
    other = relabel(images, labels, config=config, teacher=teacher, mean=mean, std=std, flip=True, views=2, topk=10,
                    seed=0, num_classes=10, cache_dir=tmp_path)
    assert other.record["key"] != out.record["key"] and len(list((tmp_path / "relabel").iterdir())) == 2


def test_top_k_labels_put_the_softmax_of_the_kept_logits_on_their_classes(setup):
    train, _, teacher, mean, std = setup
    out = relabel(train.images[:8], train.labels[:8], config=EvalConfig(**SOFT), teacher=teacher, mean=mean, std=std,
                  flip=True, views=1, topk=3, seed=0, num_classes=10)
    got = out.labels(0, 0, 8, 2.0)
    assert ((got > 0).sum(1) == 3).all()
    for row, values, classes in zip(got, out.values[0], out.indices[0]):
        torch.testing.assert_close(row[classes], F.softmax(values / 2.0, dim=0))


def test_a_relabelled_evaluation_runs_the_teacher_once_for_all_its_trainings(setup, tmp_path):
    train, test, teacher, mean, std = setup
    synthetic = SyntheticImages(train.images[:20], train.labels[:20], list(train.class_names))
    config = EvalConfig(**SOFT, relabel=3)
    counting = Counting(teacher)
    report = evaluate_synthetic(synthetic, test, config, mean=mean, std=std, teacher=counting, progress=False,
                                relabel_dir=tmp_path)
    assert counting.images == 3 * 20  # three views of 20 images, then only replays
    assert report.record["evaluator"]["relabel"]["views"] == 3 and "FKD" in report.record["evaluator"]["labels"]
    # Trainings on the cached labels and on labels computed afresh are the same, bit for bit.
    a = train_model(synthetic.images, synthetic.labels, num_classes=10, config=config, mean=mean, std=std, seed=5,
                    relabelled=relabel(synthetic.images, synthetic.labels, config=config, teacher=teacher, mean=mean,
                                       std=std, flip=True, views=3, topk=10, seed=0, num_classes=10,
                                       cache_dir=tmp_path))
    b = train_model(synthetic.images, synthetic.labels, num_classes=10, config=config, mean=mean, std=std, seed=5,
                    relabelled=relabel(synthetic.images, synthetic.labels, config=config, teacher=teacher, mean=mean,
                                       std=std, flip=True, views=3, topk=10, seed=0, num_classes=10))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    # Online labels keep the identity (the content key) evaluations had before relabelling existed.
    assert "relabel" not in EvalConfig(**SOFT).identity() and config.identity()["relabel"] == 3


def test_relabel_without_a_teacher_loss_is_refused():
    with pytest.raises(DataError, match="relabel replays the teacher's labels"):
        EvalConfig(**{**SOFT, "loss": "static_kl"}, relabel=2)
