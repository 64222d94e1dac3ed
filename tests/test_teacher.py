"""The teacher: fit-teacher on digits, its content cache, pretrained teachers offline, the soft protocol end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentdd.cli import main
from latentdd.data import SyntheticImages, load_dataset
from latentdd.errors import DataError, LatentDDError
from latentdd.evaluate import EvalConfig, evaluate_synthetic, train_model
from latentdd.evaluate import teacher as teacher_module
from latentdd.evaluate.teacher import TeacherConfig, fit_teacher, pretrained_teacher, resolve_teacher
from latentdd.evaluate.trainer import channel_stats

QUIET = ["--quiet"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def tiny_teacher(cache, **kw) -> TeacherConfig:
    return TeacherConfig(**({"preset": "quick", "width": 16, "depth": 2, "epochs": 6, "lr": 3e-3, "batch_size": 64,
                             "cache_dir": str(cache)} | kw))


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("teacher_cache")
    train, test = digits
    return fit_teacher(train, test, tiny_teacher(cache)), cache


def test_fit_teacher_trains_records_its_test_accuracy_and_saves_safetensors(fitted, digits):
    teacher, cache = fitted
    record = teacher.record
    assert record["test_accuracy"] > 80.0 and not record["cached"]  # sklearn digits: chance is 10 %
    assert record["architecture"] == {"model": "convnet", "width": 16, "depth": 2, "norm": "instancenorm",
                                      "act": "relu", "pool": "avgpool"}
    folder = cache / "teacher" / record["key"][:16]
    assert sorted(p.name for p in folder.iterdir()) == ["teacher.json", "teacher.safetensors"]
    from safetensors.torch import load_file

    assert set(load_file(folder / "teacher.safetensors")) == set(teacher.model.state_dict())
    assert json.loads((folder / "teacher.json").read_text())["test_accuracy"] == record["test_accuracy"]
    _, test = digits
    assert teacher_module.teacher_accuracy(teacher, test) == pytest.approx(record["test_accuracy"])


def test_the_cache_is_reused_by_content_and_a_change_of_settings_fits_anew(fitted, digits, monkeypatch):
    teacher, cache = fitted
    train, test = digits

    def no_training(*a, **k):
        raise AssertionError("a cached teacher must not be trained again")

    monkeypatch.setattr(teacher_module, "train_model", no_training)
    again = fit_teacher(train, test, tiny_teacher(cache))
    assert again.record["cached"] and again.record["key"] == teacher.record["key"]
    x = test.images[:20]
    torch.testing.assert_close(again(x), teacher(x))
    with pytest.raises(AssertionError, match="must not be trained again"):
        fit_teacher(train, test, tiny_teacher(cache, seed=1))  # another seed: another entry
    with pytest.raises(AssertionError, match="must not be trained again"):
        fit_teacher(train.subset(torch.arange(1000)), test, tiny_teacher(cache))  # other images: another entry


def test_a_soft_evaluation_learns_the_teacher_s_labels_of_a_tiny_random_real_set(fitted, digits):
    """Two real images per class under the soft protocol: the KL loss falls, the student learns what the
    teacher says (a teacher whose answers are shifted by one class gives a student that is wrong nearly
    always), and the record holds the teacher's test accuracy."""
    teacher, _ = fitted
    train, test = digits
    g = torch.Generator().manual_seed(0)
    members = [torch.nonzero(train.labels == k).flatten() for k in range(10)]
    idx = torch.cat([m[torch.randperm(len(m), generator=g)[:2]] for m in members])
    subset = SyntheticImages(train.images[idx], train.labels[idx], list(train.class_names))
    mean, std = channel_stats(train)
    # 8 px images: the ImageNet crop range would leave a pixel or two; lr 1e-2: 100 steps instead of the 300 epochs
    soft = EvalConfig.preset("soft", width=16, depth=2, epochs=100, lr=1e-2, batch_size=20, num_eval=1, compile="off",
                             crop_scale=(0.5, 1.0))
    history: list = []
    train_model(subset.images, subset.labels, num_classes=10, config=soft, mean=mean, std=std, flip=False,
                teacher=teacher, loss_history=history)
    assert history[-1] < 0.5 * history[0]
    report = evaluate_synthetic(subset, test, soft, mean=mean, std=std, flip=False, progress=False, teacher=teacher)
    assert report.mean > 50.0  # chance: 10 %
    ev = report.record["evaluator"]
    assert ev["teacher"]["test_accuracy"] == teacher.record["test_accuracy"]
    assert ev["labels"].startswith("soft: the teacher's") and ev["loss"] == "T^2 KL(teacher || student) at T = 4"

    class Shifted:  # says class k + 1 wherever the real teacher says k
        record = {"name": "shifted", "test_accuracy": None}

        def __call__(self, x):
            return teacher(x).roll(1, dims=1)

    shifted = evaluate_synthetic(subset, test, soft, mean=mean, std=std, flip=False, progress=False, teacher=Shifted())
    assert shifted.mean < 20.0, shifted.accuracies


class _TinyImageNetNet(torch.nn.Module):
    """A stand-in for an ImageNet classifier: 3-channel input, `outputs` logits, a `fc` like torchvision's."""

    def __init__(self, outputs=1000):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # any image size
        self.fc = torch.nn.Linear(4, outputs)

    def forward(self, x):
        return self.fc(self.body(x))


def _offline_pretrained(monkeypatch, outputs=1000):
    net = _TinyImageNetNet(outputs)
    monkeypatch.setitem(teacher_module.PRETRAINED, "torchvision:resnet18",
                        lambda: (net, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], {"weights": "tiny stand-in"}))
    return net


def test_a_pretrained_teacher_keeps_the_dataset_s_classes_of_its_outputs(monkeypatch, digits, tmp_path):
    net = _offline_pretrained(monkeypatch, outputs=12)
    _, test = digits
    class_map = [11, 10, 9, 8, 7, 6, 5, 4, 3, 2]
    config = TeacherConfig(source="torchvision:resnet18", class_map=class_map, cache_dir=str(tmp_path))
    teacher = pretrained_teacher(config, test)
    x = test.images[:5]  # (5, 1, 8, 8): gray, repeated to the teacher's 3 channels
    normalised = (x.expand(-1, 3, -1, -1) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(teacher(x), net(normalised)[:, class_map])
    assert 0.0 <= teacher.record["test_accuracy"] <= 100.0 and not teacher.record["cached"]
    assert pretrained_teacher(config, test).record["cached"]
    seen = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    upsampled = pretrained_teacher(TeacherConfig(source="torchvision:resnet18", class_map=class_map, input_size=24,
                                                 cache_dir=str(tmp_path)), test)
    seen.clear()
    upsampled(x)
    assert seen == [(5, 3, 24, 24)] and upsampled.record["key"] != teacher.record["key"]
    with pytest.raises(DataError, match="2 entries for 10 classes"):
        pretrained_teacher(TeacherConfig(source="torchvision:resnet18", class_map=[0, 1], cache_dir=str(tmp_path)), test)
    with pytest.raises(DataError, match="--teacher-class-map"):
        pretrained_teacher(TeacherConfig(source="torchvision:resnet18", cache_dir=str(tmp_path)), test)


def test_torchvision_weights_are_loaded_without_pickle(monkeypatch):
    """torchvision's own loader would call torch.hub with weights_only=False; ours asks for weights_only=True."""
    from torchvision.models import resnet18

    seen = {}

    def fake_download(url, **kwargs):
        seen.update(kwargs, url=url)
        return resnet18().state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    model, mean, std, meta = teacher_module._torchvision_resnet18()
    assert seen["weights_only"] is True and seen["check_hash"] is True and seen["url"].endswith(".pth")
    assert model.fc.out_features == 1000 and len(mean) == 3 and meta["imagenet_top1"] > 60

    def offline(url, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(LatentDDError, match="run once with internet"):
        teacher_module._torchvision_resnet18()


@pytest.mark.bad_input
def test_a_teacher_of_another_dataset_is_refused(fitted, tmp_path):
    teacher, _ = fitted
    other = load_dataset("digits", "test")
    other.class_names = [f"c{i}" for i in range(10)]
    with pytest.raises(DataError, match="trained on classes"):
        resolve_teacher(TeacherConfig(source=teacher.record["directory"]), other, other)
    with pytest.raises(DataError, match="holds no teacher"):
        resolve_teacher(TeacherConfig(source=str(tmp_path)), other, other)
    with pytest.raises(DataError, match="needs a teacher"):
        train_model(other.images[:10], other.labels[:10], num_classes=10, config=EvalConfig.preset("soft", epochs=1),
                    mean=torch.tensor([0.5]), std=torch.tensor([0.2]))


def test_fit_teacher_then_evaluate_soft_from_the_command_line(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["fit-teacher", "--dataset", "digits", "--width", "8", "--depth", "2", "--epochs", "2",
                 "--lr", "0.003", "--cache-dir", str(cache), *QUIET]) == 0
    out = capsys.readouterr().out
    folder = out.split("--teacher ")[-1].strip()
    assert (cache / "teacher").is_dir() and folder.startswith(str(cache))
    assert main(["baseline", "--dataset", "digits", "--ipc", "2", "--out", str(tmp_path / "rr"), *QUIET]) == 0
    report_path = tmp_path / "soft.json"
    assert main(["evaluate", "--images", str(tmp_path / "rr"), "--dataset", "digits", "--protocol", "soft",
                 "--teacher", folder, "--width", "8", "--depth", "2", "--epochs", "2", "--num-eval", "1",
                 "--compile", "off", "--json", str(report_path), *QUIET]) == 0
    report = json.loads(report_path.read_text())
    teacher_record = json.loads((cache / "teacher" / folder.rsplit("/", 1)[-1] / "teacher.json").read_text())
    assert report["record"]["evaluator"]["teacher"]["test_accuracy"] == teacher_record["test_accuracy"]
    assert report["record"]["evaluator"]["protocol"] == "soft"
    assert report["record"]["evaluator"]["settings"]["optimizer"] == "adamw"


def test_the_imagenet_subset_command_runs_offline_end_to_end(tmp_path, monkeypatch, make_class_tree, capsys):
    """An ImageNette-like folder (WordNet-id classes, train/ and val/), a pretrained teacher (a tiny stand-in for
    torchvision's ResNet-18: no network), a ResNet-18 student, protocol soft-imagenet: the README's command."""
    _offline_pretrained(monkeypatch)
    wnids = [f"n{i:08d}" for i in range(1000)]
    root = tmp_path / "imagenette"
    make_class_tree(root / "train", {wnids[0]: 3, wnids[217]: 3}, size=(40, 40), seed=0)
    make_class_tree(root / "val", {wnids[0]: 2, wnids[217]: 2}, size=(40, 40), seed=1)
    classes = tmp_path / "LOC_synset_mapping.txt"
    classes.write_text("".join(f"{w} class {i}\n" for i, w in enumerate(wnids)))
    data = ["--dataset", "imagefolder", "--root", str(root), "--image-size", "32", "--resize", "center_crop"]
    assert main(["baseline", *data, "--ipc", "2", "--out", str(tmp_path / "set"), *QUIET]) == 0
    report_path = tmp_path / "soft.json"
    assert main(["evaluate", "--images", str(tmp_path / "set"), *data, "--protocol", "soft-imagenet",
                 "--teacher", "torchvision:resnet18", "--teacher-imagenet-classes", str(classes),
                 "--teacher-cache-dir", str(tmp_path / "cache"), "--model", "resnet18", "--width", "4",
                 "--epochs", "1", "--num-eval", "1", "--compile", "off", "--json", str(report_path), *QUIET]) == 0
    evaluator = json.loads(report_path.read_text())["record"]["evaluator"]
    assert evaluator["architecture"] == "resnet18" and evaluator["protocol"] == "soft-imagenet"
    assert evaluator["teacher"]["class_index"] == [0, 217] and evaluator["teacher"]["name"] == "torchvision:resnet18"
    assert 0.0 <= evaluator["teacher"]["test_accuracy"] <= 100.0


TINY_FIT = ["--set", "image_size=8", "--set", "block_out_channels=[8, 16]", "--set", "norm_num_groups=4",
            "--set", "latent_channels=2", "--set", "max_steps=20", "--set", "batch_size=64",
            "--set", "checkpoint_every=0", "--set", "scale_images=256"]


def test_run_under_the_soft_protocol_labels_every_set_with_one_teacher_and_scores_it(tmp_path):
    import yaml

    config = tmp_path / "soft.yaml"
    config.write_text(yaml.safe_dump({"teacher": {"width": 8, "depth": 2, "epochs": 1,
                                                  "cache_dir": str(tmp_path / "cache")}}))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--dataset", "digits", "--vae", "fit", "--cache-dir",
                 str(tmp_path / "cache"), *TINY_FIT, "--methods", "kmeans", "--ipc", "2", "--protocol", "soft",
                 "--epochs", "2", "--width", "8", "--depth", "2", "--compile", "off", "--out", str(out), *QUIET]) == 0
    rows = json.loads((out / "results.json").read_text())
    kmeans = next(r for r in rows if r["method"].startswith("kmeans"))
    randoms = [r["mean"] for r in rows if r.get("subset_of")]
    assert len(randoms) == 5 and kmeans["ior"] == pytest.approx(kmeans["mean"] - sum(randoms) / 5)
    assert kmeans["hlr"] is None  # soft labels: HLR needs the hard-label accuracies
    report = json.loads(open(kmeans["report"]).read())
    teacher = report["record"]["evaluator"]["teacher"]
    assert teacher["test_accuracy"] > 10.0 and report["inputs"]["teacher"] == teacher["key"]
    assert (tmp_path / "cache" / "teacher" / teacher["key"][:16] / "teacher.safetensors").is_file()
    assert "| IOR | HLR | LRS |" in (out / "results.md").read_text()


def test_calibrate_measures_random_real_under_the_soft_protocol_with_its_teacher(tmp_path):
    from latentdd.config import DataConfig
    from latentdd.pipelines.calibrate import CalibrateConfig, run_calibration

    config = CalibrateConfig(runs={"soft": [1], "dc": [1]}, num_eval={"soft": 1, "dc": 1}, full_data_epochs=0,
                             evaluator={"epochs": 2, "width": 8, "depth": 2, "compile": "off"},
                             teacher={"width": 8, "depth": 2, "epochs": 1, "cache_dir": str(tmp_path / "cache")})
    rows = run_calibration(DataConfig(name="digits"), config, tmp_path / "cal", progress=False)
    soft, dc = rows
    assert soft["protocol"] == "soft" and soft["teacher_test_accuracy"] > 10.0 and "teacher" not in dc
    report = json.loads((tmp_path / "cal" / "reports" / "random_soft_ipc1.json").read_text())
    assert report["record"]["evaluator"]["teacher"]["test_accuracy"] == soft["teacher_test_accuracy"]
    assert "Soft-label rows: teacher" in (tmp_path / "cal" / "results.md").read_text()


def _edit_record(change, rehash: bool = False):
    """An edit of a teacher folder's teacher.json: change(record); rehash: its record_sha256 computed again, as a
    record that is consistent in itself would hold (so that the checks after the hash's are reached)."""
    def edit(folder):
        from latentdd.io import json_sha256

        record = json.loads((folder / "teacher.json").read_text())
        change(record)
        if rehash:
            record["record_sha256"] = json_sha256(record, without="record_sha256")
        (folder / "teacher.json").write_text(json.dumps(record))
    return edit


def _edit_weights(transform):
    def edit(folder):
        (folder / "teacher.safetensors").write_bytes(transform((folder / "teacher.safetensors").read_bytes()))
    return edit


def _other_weights(data: bytes) -> bytes:
    """Weights of the right names and shapes, all zeros: a valid safetensors file that is not the one recorded."""
    from safetensors.torch import load, save

    return save({name: torch.zeros_like(t) for name, t in load(data).items()})


def _pickle(data: bytes) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"features.0.weight": torch.zeros(2)}, buffer)
    return buffer.getvalue()


def _record_file(text: str):
    def edit(folder):
        (folder / "teacher.json").write_text(text)
    return edit


# Issue 32 (2, 3, 4): (id, an edit of a stored teacher folder, what the warning / error says about it)
DAMAGED_TEACHERS = [
    ("truncated-weights", _edit_weights(lambda b: b[: len(b) // 2]), "is truncated or damaged"),
    ("pickle-as-weights", _edit_weights(_pickle), "is not a safetensors file (a pickle, or another format), which "
                                                  "latentdd does not load"),
    ("other-weights", _edit_weights(_other_weights), "its sha256 differs from weights_sha256"),
    ("weights-missing", lambda folder: (folder / "teacher.safetensors").unlink(), "teacher.safetensors is missing"),
    ("edited-test-accuracy", _edit_record(lambda r: r.update(test_accuracy=99.0)), "does not match its record_sha256"),
    ("changed-width", _edit_record(lambda r: r["architecture"].update(width=32), rehash=True),
     "holds the weights of another architecture than the one its teacher.json names"),
    ("unknown-model", _edit_record(lambda r: r["architecture"].update(model="vgg"), rehash=True),
     "names an architecture latentdd cannot build (unknown model 'vgg'"),
    ("accuracy-out-of-range", _edit_record(lambda r: r.update(test_accuracy=150), rehash=True),
     "holds test_accuracy 150 (must be a percentage, 0 to 100)"),
    ("written-before-checksums", _edit_record(lambda r: [r.pop("record_sha256"), r.pop("weights_sha256")]),
     "holds no record_sha256"),
    ("junk-record", _record_file("{not json"), "teacher.json cannot be read as JSON"),
    ("record-not-a-mapping", _record_file("[1, 2]"), "teacher.json is not a teacher record"),
]
IDS = [c[0] for c in DAMAGED_TEACHERS]


@pytest.mark.parametrize("damage, needle", [c[1:] for c in DAMAGED_TEACHERS], ids=IDS)
def test_a_damaged_cached_teacher_is_fitted_again_with_a_warning(damage, needle, fitted, digits, tmp_path, monkeypatch,
                                                                  caplog):
    """Issue 32 (2): the cache entry's teacher.json and weights are checked before use; one that fails is fitted
    again (here: a stand-in for the training), with a warning naming the file, and rewritten whole."""
    import shutil

    teacher, cache = fitted
    train, test = digits
    entry = tmp_path / "teacher" / teacher.record["key"][:16]
    shutil.copytree(cache / "teacher" / teacher.record["key"][:16], entry)
    damage(entry)
    fits = []

    def stand_in(images, labels, *, num_classes, config, **kwargs):
        fits.append(1)
        return teacher.model

    monkeypatch.setattr(teacher_module, "train_model", stand_in)
    again = fit_teacher(train, test, tiny_teacher(tmp_path))
    assert fits == [1] and not again.record["cached"]
    assert needle in caplog.text and str(entry) in caplog.text and "fitting it again" in caplog.text
    assert again.record["test_accuracy"] == pytest.approx(teacher.record["test_accuracy"])
    caplog.clear()
    assert fit_teacher(train, test, tiny_teacher(tmp_path)).record["cached"] and fits == [1]  # repaired
    assert caplog.text == ""


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher-bad-input") / "images"
    assert main(["baseline", "--dataset", "digits", "--ipc", "1", "--out", str(out), *QUIET]) == 0
    return out


@pytest.mark.bad_input
@pytest.mark.parametrize("damage, needle", [c[1:] for c in DAMAGED_TEACHERS], ids=IDS)
def test_a_damaged_teacher_folder_is_a_clear_error(damage, needle, fitted, image_folder, tmp_path, capsys):
    """Issue 32 (3, 4): `--teacher DIR` is not rebuilt here: a folder that fails a check is refused, naming the
    file and what to do, where it gave a traceback (or, edited, was used: its test accuracy went into reports)."""
    import shutil

    teacher, _ = fitted
    folder = tmp_path / "teacher"
    shutil.copytree(teacher.record["directory"], folder)
    damage(folder)
    assert main(["evaluate", "--images", str(image_folder), "--dataset", "digits", "--protocol", "soft", "--teacher",
                 str(folder), "--width", "8", "--depth", "2", "--epochs", "1", "--num-eval", "1", "--compile", "off",
                 *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentdd evaluate: error: ") and "Traceback" not in err
    assert needle in err and str(folder) in err, err
    assert f"the teacher in {folder} was not loaded. Fit it again with `latentdd fit-teacher`" in err


def test_fit_teacher_says_loaded_from_the_cache_only_when_its_weights_verify(tmp_path, capsys, caplog):
    """Issue 32 (2): with other weights (valid safetensors, wrong bytes) in the cache entry, fit-teacher said
    "loaded from the cache" and used them; with truncated ones it ended in a SafetensorError traceback."""
    fit = ["fit-teacher", "--dataset", "digits", "--width", "8", "--depth", "2", "--epochs", "1",
           "--cache-dir", str(tmp_path), *QUIET]
    assert main(fit) == 0
    folder = capsys.readouterr().out.split("--teacher ")[-1].strip()
    assert main(fit) == 0
    assert "loaded from the cache" in capsys.readouterr().out
    for damage in (_other_weights, lambda b: b[:100]):
        _edit_weights(damage)(Path(folder))
        caplog.clear()
        assert main(fit) == 0
        out = capsys.readouterr().out
        assert "loaded from the cache" not in out and "trained in" in out
        assert f"{folder}/teacher.safetensors" in caplog.text and "fitting it again" in caplog.text


def test_a_pretrained_teacher_s_edited_cached_accuracy_is_measured_again(monkeypatch, digits, tmp_path, caplog):
    _offline_pretrained(monkeypatch, outputs=10)
    _, test = digits
    config = TeacherConfig(source="torchvision:resnet18", class_map=list(range(10)), cache_dir=str(tmp_path))
    measured = pretrained_teacher(config, test).record
    path = Path(measured["directory"]) / "teacher.json"
    _edit_record(lambda r: r.update(test_accuracy=99.0))(path.parent)
    again = pretrained_teacher(config, test).record
    assert not again["cached"] and again["test_accuracy"] == measured["test_accuracy"]
    assert f"{path} does not match its record_sha256" in caplog.text
    assert pretrained_teacher(config, test).record["cached"]


# ---------------------------------------------------------------- presets and resumable fits (issue 34)


def test_presets_fill_the_unset_fit_settings_and_an_override_changes_one():
    assert TeacherConfig().preset == teacher_module.DEFAULT_TEACHER_PRESET == "strong"
    quick = TeacherConfig(preset="quick")
    assert (quick.width, quick.epochs, quick.crop_scale, quick.hflip) == (64, 3, None, False)
    strong = TeacherConfig(preset="strong", epochs=2)
    preset = teacher_module.TEACHER_PRESETS["strong"]
    assert (strong.width, strong.crop_scale, strong.hflip) == (preset["width"], (0.8, 1.0), True)
    assert strong.departures() == {"epochs": (2, preset["epochs"])}
    assert strong.eval_config().crop_scale == (0.8, 1.0) and strong.eval_config().hflip
    assert strong.fit_settings()["crop_scale"] == [0.8, 1.0] and strong.fit_settings()["hflip"] is True
    # the first strong teacher, renamed: the same fit but the crop
    first = TeacherConfig(preset="strong-crop05")
    assert first.fit_settings() == TeacherConfig(crop_scale=(0.5, 1.0)).fit_settings() != TeacherConfig().fit_settings()
    assert TeacherConfig(crop_scale=(0.5, 1.0)).departures() == {"crop_scale": ((0.5, 1.0), (0.8, 1.0))}
    with pytest.raises(DataError, match="teacher.preset"):
        TeacherConfig(preset="huge")


def test_the_quick_preset_keeps_the_content_key_of_the_label_table_teacher():
    """The 89.78 % teacher of results/label_table_fashion_mnist keeps its key (and so its cache entry and the
    records naming it): presets add no field to the key of a fit without augmentation."""
    from latentdd.cachekey import content_key

    report = Path(__file__).parents[1] / "results/label_table_fashion_mnist/soft_rr10/reports/random-real-s0_ipc10.json"
    recorded = json.loads(report.read_text())["record"]["evaluator"]["teacher"]
    identity = {"version": recorded["version"], "settings": TeacherConfig(preset="quick").fit_settings(),
                "train": recorded["train"], "class_names": recorded["class_names"]}
    assert identity["settings"] == recorded["settings"]
    assert content_key("teacher", **identity) == recorded["key"]
    assert content_key("teacher", **identity | {"settings": TeacherConfig(preset="strong").fit_settings()}) \
        != recorded["key"]


def test_a_teacher_fit_resumes_from_its_epoch_checkpoint_to_the_same_weights(digits, tmp_path, monkeypatch,
                                                                            torch_one_thread):
    from latentdd.evaluate import trainer

    train, test = digits
    val = load_dataset("digits", "test")  # any labelled split: the per-epoch val accuracy is what is compared
    # crop and flip draw from the trainer's generator: the checkpoint must carry its state
    kw = {"epochs": 3, "crop_scale": (0.6, 1.0), "hflip": True, "preset": "strong"}
    whole = fit_teacher(train, test, tiny_teacher(tmp_path / "whole", **kw), val=val)
    real_save = trainer.save_state
    writes = []

    def save_then_crash(path, state):
        real_save(path, state)
        writes.append(path)
        if len(writes) == 1:
            raise KeyboardInterrupt  # the session ends after the first epoch's checkpoint

    monkeypatch.setattr(trainer, "save_state", save_then_crash)
    config = tiny_teacher(tmp_path / "resumed", **kw)
    with pytest.raises(KeyboardInterrupt):
        fit_teacher(train, test, config, val=val)
    partial = tmp_path / "resumed" / "teacher" / f".partial-{whole.record['key'][:16]}"
    assert writes == [partial / "fit.safetensors"]
    monkeypatch.setattr(trainer, "save_state", real_save)

    def no_epoch_zero(images, labels, **k):  # the resumed fit must start from epoch 1, not train epoch 0 again
        log = k["epoch_log"]
        model = real_train(images, labels, **k)
        assert [e["epoch"] for e in log] == [0, 1, 2]
        return model

    real_train = teacher_module.train_model
    monkeypatch.setattr(teacher_module, "train_model", no_epoch_zero)
    resumed = fit_teacher(train, test, config, val=val)
    for (name, p), q in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in whole.record["epochs"]]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in resumed.record["epochs"]] == strip
    assert resumed.record["test_accuracy"] == whole.record["test_accuracy"]
    assert not partial.exists()  # the finished entry replaces the checkpoint


def test_the_teacher_record_names_its_preset_and_logs_each_epoch(digits, tmp_path):
    train, test = digits
    teacher = fit_teacher(train, test, tiny_teacher(tmp_path, epochs=2), val=test)
    record = teacher.record
    assert record["preset"] == "quick"
    assert record["departures"]["width"] == (16, 64) and record["departures"]["epochs"] == (2, 3)
    assert [e["epoch"] for e in record["epochs"]] == [0, 1]
    assert all(e["seconds"] > 0 and 0 <= e["val_accuracy"] <= 100 for e in record["epochs"])
    assert record["val_accuracy"] == record["epochs"][-1]["val_accuracy"]
    again = fit_teacher(train, test, tiny_teacher(tmp_path, epochs=2), val=test)
    assert again.record["cached"] and again.record["preset"] == "quick"


def test_a_checkpoint_of_another_architecture_is_ignored_with_a_warning(tmp_path, caplog, torch_one_thread):
    from latentdd.checkpoint import save_state

    images, labels = torch.rand(32, 1, 8, 8), torch.arange(32) % 4
    config = EvalConfig(width=8, depth=1, epochs=2, dsa=False, num_eval=1, compile="off", batch_size=16)
    path = tmp_path / "fit.safetensors"
    save_state(path, {"model": {"w": torch.zeros(3)}, "optimizer": {}, "generator": torch.Generator().get_state(),
                      "epoch": 1, "losses": [], "epoch_log": []})
    mean, std = torch.zeros(1), torch.ones(1)
    fresh = train_model(images, labels, num_classes=4, config=config, mean=mean, std=std, checkpoint=tmp_path / "x")
    resumed = train_model(images, labels, num_classes=4, config=config, mean=mean, std=std, checkpoint=path)
    assert "another architecture" in caplog.text and "starts afresh" in caplog.text
    for p, q in zip(fresh.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)


def test_fit_teacher_takes_a_preset_from_the_command_line_and_the_soft_record_names_it(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["fit-teacher", "--dataset", "digits", "--teacher-preset", "strong", "--width", "8", "--depth", "2",
                 "--epochs", "1", "--cache-dir", str(cache), *QUIET]) == 0
    folder = capsys.readouterr().out.split("--teacher ")[-1].strip()
    record = json.loads((Path(folder) / "teacher.json").read_text())
    assert record["preset"] == "strong" and record["departures"] == {"width": [8, 128], "depth": [2, None],
                                                                     "epochs": [1, 30]}
    assert record["settings"]["crop_scale"] == [0.8, 1.0] and record["settings"]["hflip"] is True
    assert [e["epoch"] for e in record["epochs"]] == [0]
    assert main(["baseline", "--dataset", "digits", "--ipc", "1", "--out", str(tmp_path / "rr"), *QUIET]) == 0
    report_path = tmp_path / "soft.json"
    assert main(["evaluate", "--images", str(tmp_path / "rr"), "--dataset", "digits", "--protocol", "soft",
                 "--teacher", folder, "--width", "8", "--depth", "2", "--epochs", "1", "--num-eval", "1",
                 "--compile", "off", "--json", str(report_path), *QUIET]) == 0
    named = json.loads(report_path.read_text())["record"]["evaluator"]["teacher"]
    assert named["preset"] == "strong" and named["key"] == record["key"]


def test_a_stored_teacher_is_named_by_the_preset_that_asks_for_its_settings(digits, tmp_path):
    """A preset renamed or redefined after a fit (the first `strong` is `strong-crop05` now): the stored teacher
    keeps its key and weights, and its record names it by the asking config's preset and departures."""
    train, test = digits
    kw = {"width": 8, "depth": 2, "epochs": 1, "batch_size": 64}
    fitted = fit_teacher(train, test, tiny_teacher(tmp_path, preset="strong", crop_scale=(0.5, 1.0), **kw))
    assert fitted.record["departures"]["crop_scale"] == ((0.5, 1.0), (0.8, 1.0))
    renamed = fit_teacher(train, test, tiny_teacher(tmp_path, preset="strong-crop05", **kw))
    assert renamed.record["cached"] and renamed.record["key"] == fitted.record["key"]
    assert renamed.record["preset"] == "strong-crop05" and "crop_scale" not in renamed.record["departures"]
    assert set(renamed.record["departures"]) == set(fitted.record["departures"]) - {"crop_scale"}
