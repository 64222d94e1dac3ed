"""Bad CLI / config input and bad input files: each case ends in exit code 2 and a message naming the problem, no traceback."""

from __future__ import annotations

import pytest

from latentdd.cli import main

OUT = ["--out", "OUT"]
D = ["--dataset", "digits"]

# (id, argv, YAML text or None, a substring the message must hold)
CASES = [
    ("unknown-section", ["evaluate", "--images", "x"], "evalutor: {epochs: 3}\n", "'evalutor'"),
    ("unknown-section-hint", ["evaluate", "--images", "x"], "evalutor: {epochs: 3}\n", "did you mean 'evaluator'"),
    ("section-of-another-command", ["evaluate", "--images", "x"], "run: {ipcs: [1]}\n", "unknown section 'run'"),
    ("non-mapping-section", ["evaluate", "--images", "x"], "evaluator: 5\n", "evaluator must be a mapping"),
    ("non-mapping-distill", ["distill", *D, *OUT], "distill: [1, 2]\n", "distill must be a mapping"),
    ("distill-unknown-key", ["distill", *D, *OUT], "distill: {ipcc: 3}\n", "did you mean 'ipc'"),
    ("baseline-unknown-key", ["baseline", *D, *OUT], "baseline: {sed: 3, ipc: 1}\n", "did you mean 'seed'"),
    ("dataset-unknown-key", ["baseline", *OUT, "--ipc", "1"], "dataset: {nme: digits}\n", "did you mean 'name'"),
    ("evaluator-bad-number", ["evaluate", "--images", "x", *D], "evaluator: {lr: fast}\n", "evaluator.lr"),
    ("evaluator-bool-for-int", ["evaluate", "--images", "x", *D], "evaluator: {epochs: true}\n", "evaluator.epochs"),
    ("evaluator-dsa-maybe", ["evaluate", "--images", "x", *D], "evaluator: {dsa: maybe}\n", "evaluator.dsa"),
    ("evaluator-bad-model", ["evaluate", "--images", "x", *D], "evaluator: {model: vgg}\n", "evaluator.model"),
    ("evaluator-bad-protocol", ["evaluate", "--images", "x", *D], "evaluator: {protocol: dd}\n", "protocol 'dd'"),
    ("evaluator-zero-epochs", ["evaluate", "--images", "x", *D, "--epochs", "0"], None,
     "evaluator.epochs must be a positive integer (or null); got 0"),
    ("baseline-ipc-0", ["baseline", *D, *OUT, "--ipc", "0"], None, "ipc (--ipc) must be a positive integer"),
    ("baseline-ipc-negative", ["baseline", *D, *OUT, "--ipc", "-2"], None, "must be a positive integer"),
    ("baseline-yaml-ipc-0", ["baseline", *D, *OUT], "baseline: {ipc: 0}\n", "must be a positive integer"),
    ("baseline-no-ipc", ["baseline", *D, *OUT], None, "IPC (images per class) is required"),
    ("distill-ipc-0", ["distill", *D, *OUT, "--ipc", "0"], None, "distill.ipc (--ipc)"),
    ("distill-yaml-ipc-0", ["distill", *D, *OUT], "distill: {ipc: 0}\n", "distill.ipc"),
    ("distill-ipc-string", ["distill", *D, *OUT], "distill: {ipc: ten}\n", "distill.ipc"),
    ("run-ipc-0", ["run", *D, "--ipc", "1,0", *OUT], None, "run.ipcs[1] must be a positive integer; got 0"),
    ("run-ipc-not-a-number", ["run", *D, "--ipc", "1,a", *OUT], None, "run.ipcs"),
    ("compare-yaml-ipc-0", ["compare", *D, *OUT], "run: {ipcs: [0]}\n", "run.ipcs"),
    ("param-maybe", ["distill", *D, *OUT, "--ipc", "1", "--param", "medoid=maybe"], None, "medoid"),
    ("param-unknown", ["distill", *D, *OUT, "--ipc", "1", "--param", "medoids=true"], None, "did you mean 'medoid'"),
    ("param-no-equals", ["distill", *D, *OUT, "--ipc", "1", "--param", "medoid"], None, "--param expects KEY=VALUE"),
    ("param-no-value", ["distill", *D, *OUT, "--ipc", "1", "--param", "medoid="], None, "--param expects KEY=VALUE"),
    ("param-bad-yaml", ["distill", *D, *OUT, "--ipc", "1", "--param", "niter=[1,"], None, "not valid YAML"),
    ("param-bad-int", ["distill", *D, *OUT, "--ipc", "1", "--param", "niter=1.5"], None, "kmeans.niter"),
    ("unknown-method", ["distill", *D, *OUT, "--ipc", "1", "--method", "kmean"], None, "did you mean 'kmeans'"),
    ("students-names-nothing", ["run", *D, *OUT, "--students", ","], None, "--students ',' names nothing"),
    ("methods-names-nothing", ["compare", *D, *OUT, "--methods", " , "], None, "--methods ' , ' names nothing"),
    ("teacher-class-map-with-a-fitted-teacher", ["evaluate", *D, "--images", "x", "--protocol", "soft",
                                                "--teacher-class-map", "1,2,3,4,5,6,7,8,9,10"], None,
     "the fitted teacher (fit) would ignore it"),
    ("unknown-preset", ["distill", *D, *OUT, "--ipc", "1", "--method", "dm", "--preset", "refrence"], None,
     "did you mean 'reference'"),
    ("run-unknown-preset", ["run", *D, *OUT, "--ipc", "1"], "run: {methods: [{method: dm, preset: fast}]}\n",
     "no preset 'fast'"),
    ("set-unknown-key", ["fit-vae", *D, "--set", "max_stpes=30"], None, "did you mean 'max_steps'"),
    ("set-bad-number", ["fit-vae", *D, "--set", "kl_weight=heavy"], None, "latent.fit.kl_weight"),
    ("latent-fit-unknown-key", ["fit-vae", *D], "latent: {fit: {max_stpes: 30}}\n", "'max_stpes'"),
    ("latent-fit-non-mapping", ["fit-vae", *D], "latent: {fit: 30}\n", "latent.fit must be a mapping"),
    ("latent-shard-size-0", ["encode", *D, *OUT, "--shard-size", "0"], None, "latent.shard_size"),
    ("fit-norm-groups-0", ["fit-vae", *D, "--set", "norm_num_groups=0"], None, "norm_num_groups"),
    ("prior-set-unknown", ["fit-prior", *D, "--prior-set", "max_step=3"], None, "did you mean 'max_steps'"),
    ("decoder-strength-range", ["distill", *D, *OUT, "--ipc", "1", "--strength", "1.5"], None, "decoder.strength"),
    ("decoder-unknown-key", ["distill", *D, *OUT, "--ipc", "1"], "decoder: {strenght: 0.5}\n", "did you mean 'strength'"),
    ("run-unknown-key", ["run", *D, *OUT], "run: {ipc: [1]}\n", "did you mean 'ipcs'"),
    ("run-use-weights-string", ["run", *D, *OUT], "run: {use_weights: 'false'}\n", "use_weights"),
    ("out-not-a-string", ["run", *D], "out: [1]\n", "out"),
    ("dataset-bad-resize", ["baseline", *D, *OUT, "--ipc", "1"], "dataset: {resize: stretch}\n", "dataset.resize"),
    ("dataset-bad-channels", ["baseline", *D, *OUT, "--ipc", "1"], "dataset: {channels: 2}\n", "dataset.channels"),
    ("calibrate-ipc-0", ["calibrate", *D, *OUT], "calibrate: {runs: {dc: [0]}}\n", "calibrate.runs.dc"),
    ("calibrate-unknown-protocol", ["calibrate", *D, *OUT], "calibrate: {runs: {dcc: [1]}}\n", "did you mean 'dc'"),
    ("calibrate-missing-num-eval", ["calibrate", *D, *OUT], "calibrate: {runs: {dc: [1]}, num_eval: {dsa: 1}}\n",
     "no entry for protocol 'dc'"),
    ("dotted-unknown-key", ["evaluate", "--images", "x", *D, "--evaluator.epoch", "3"], None,
     "unknown flag --evaluator.epoch: evaluator has no key 'epoch'"),
    ("dotted-unknown-key-hint", ["evaluate", "--images", "x", *D, "--evaluator.epoch", "3"], None,
     "did you mean '--evaluator.epochs'"),
    ("dotted-section-of-another-command", ["evaluate", "--images", "x", *D, "--run.ipcs", "[1]"], None,
     "`latentdd evaluate` reads the sections dataset, evaluator, teacher"),
    ("dotted-bad-value", ["evaluate", "--images", "x", *D, "--evaluator.epochs", "0"], None,
     "evaluator.epochs must be a positive integer (or null); got 0"),
    ("dotted-bad-choice", ["baseline", *D, *OUT, "--ipc", "1", "--dataset.resize", "stretch"], None,
     "dataset.resize must be one of pad, resize, center_crop; got 'stretch'"),
    ("dotted-no-value", ["evaluate", "--images", "x", *D, "--evaluator.epochs"], None, "--evaluator.epochs needs a value"),
    ("dotted-bad-yaml", ["evaluate", "--images", "x", *D, "--evaluator.milestones", "[0.5,"], None, "not valid YAML"),
    ("dotted-a-section", ["fit-vae", *D, "--latent.fit", "3"], None, "--latent.fit is a section"),
    ("dotted-free-mapping-needs-a-key", ["distill", *D, *OUT, "--ipc", "1", "--distill.params", "3"], None,
     "--distill.params needs a key"),
    ("dotted-nested-unknown", ["fit-prior", *D, "--decoder.prior.max_step", "3"], None,
     "did you mean '--decoder.prior.max_steps'"),
    ("dotted-nested-bad-value", ["fit-vae", *D, "--latent.fit.kl_weight", "heavy"], None, "latent.fit.kl_weight"),
    ("dotted-param-unknown", ["distill", *D, *OUT, "--ipc", "1", "--distill.params.medoids", "true"], None,
     "did you mean 'medoid'"),
    ("short-flag-bad-int", ["evaluate", "--images", "x", *D, "--epochs", "many"], None, "evaluator.epochs = 'many'"),
    ("short-flag-bad-choice", ["evaluate", "--images", "x", *D, "--model", "vgg"], None,
     "evaluator.model must be one of convnet"),
    ("calibrate-evaluator-key", ["calibrate", *D, *OUT], "calibrate: {evaluator: {epoch: 3}}\n", "did you mean 'epochs'"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("argv, text, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(argv, text, needle, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    if text is not None:
        (tmp_path / "c.yaml").write_text(text)
        argv += ["--config", str(tmp_path / "c.yaml")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentdd {argv[0]}: error: ") and "Traceback" not in err
    assert needle in err, err
    assert not (tmp_path / "out").exists()  # refused before any work


def _label(value):
    def edit(manifest, images):
        manifest["images"][0]["label"] = value
    return edit


def _no_images(manifest, images):
    manifest["images"] = []


def _set(key, value):
    def edit(manifest, images):
        manifest[key] = value
    return edit


def _drop(field):
    def edit(manifest, images):
        del manifest["images"][0][field]
    return edit


def _duplicate(manifest, images):
    manifest["images"][1] = dict(manifest["images"][0])


def _symlink_outside(manifest, images):
    """The first image moved beside the folder, a symbolic link to it left in its place: its sha256 still matches."""
    inside = images / manifest["images"][0]["file"]
    outside = images.parent / "outside.png"
    inside.rename(outside)
    inside.symlink_to(outside)


EVAL = ["evaluate", "--images", "IMAGES", *D, "--num-eval", "1", "--epochs", "1"]
LATENTS = ["distill", *D, "--vae", "pixel", "--ipc", "1", "--latents", "DIR", *OUT]
RENDER = ["render", *D, "--vae", "pixel", "--synthetic", "SYNTHETIC", "--cache-dir", "CACHE", *OUT]

# Bad files rather than bad flags: (id, argv, setup, a substring the message must hold). "IMAGES" is a
# 1-IPC digits image folder whose manifest `setup` edits (a callable given the manifest and the folder);
# "DIR" a folder holding the files `setup` names (a dict {name: text}); "SYNTHETIC" a `latentdd distill
# --vae pixel` folder of digits, "CACHE" a --cache-dir.
FILE_CASES = [
    ("manifest-label-not-an-index", EVAL, _label("x"), "has label 'x'; a label is the index of its class"),
    ("manifest-label-out-of-range", EVAL, _label(10), "has label 10"),
    ("manifest-label-bool", EVAL, _label(True), "has label True"),
    ("manifest-no-images", EVAL, _no_images, "lists no images"),
    ("manifest-format-version-string", EVAL, _set("format_version", "1"), "format_version '1'; it must be a positive integer"),
    ("manifest-entry-without-sha256", EVAL, _drop("sha256"), "has no 'sha256'"),
    ("manifest-entry-without-file", EVAL, _drop("file"), "has no 'file'"),
    ("manifest-duplicate-entry", EVAL, _duplicate, "lists the file '0/000000.png' twice"),
    ("manifest-symlink-outside-the-folder", EVAL, _symlink_outside, "which leads through a symbolic link to"),
    ("depth-too-deep-for-the-images", [*EVAL, "--depth", "6"], None, "the largest depth 8 px images allow is 3"),
    ("latents-junk-manifest", LATENTS, {"manifest.json": "{not json"}, "is not a latent cache latentdd wrote"),
    ("latents-damaged-manifest-of-a-cache", LATENTS, {"manifest.json": "{not json", "plan.json": "{}"},
     "run the same command again"),
    ("latents-manifest-not-a-mapping", LATENTS, {"manifest.json": "[1, 2]"}, "is not a latent cache"),
    # Issue 32 (6): blamed --vae; pixel-space latents of 1-channel digits cannot be rendered as 3 channels.
    ("render-with-the-channels-of-another-dataset", [*RENDER, "--channels", "3"], None,
     "distilled from images of shape (1, 8, 8), but this dataset's images are (3, 8, 8) (--channels 3 here, unset "
     "when distilled)"),
]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-files") / "images"
    assert main(["baseline", *D, "--ipc", "1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """(a `latentdd distill --vae pixel` folder of digits at IPC 1, its --cache-dir)."""
    folder = tmp_path_factory.mktemp("distilled")
    assert main(["distill", *D, "--vae", "pixel", "--ipc", "1", "--method", "random", "--out", str(folder / "set"),
                 "--cache-dir", str(folder / "cache"), "--quiet"]) == 0
    return folder / "set", folder / "cache"


@pytest.mark.bad_input
@pytest.mark.parametrize("argv, setup, needle", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_files_are_a_clear_error(argv, setup, needle, image_folder, tmp_path, capsys, request):
    import json
    import shutil

    images, folder = tmp_path / "images", tmp_path / "junk"
    shutil.copytree(image_folder, images)
    if callable(setup):
        manifest = json.loads((images / "manifest.json").read_text())
        setup(manifest, images)
        (images / "manifest.json").write_text(json.dumps(manifest))
    folder.mkdir()
    for name, text in (setup if isinstance(setup, dict) else {}).items():
        (folder / name).write_text(text)
    place = {"OUT": tmp_path / "out", "IMAGES": images, "DIR": folder}
    if "SYNTHETIC" in argv:
        place["SYNTHETIC"], place["CACHE"] = request.getfixturevalue("distilled")
    argv = [str(place[a]) if a in place else a for a in argv]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentdd {argv[0]}: error: ") and "Traceback" not in err
    assert needle in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["sys", "chmod", "folder"])
def test_an_unwritable_json_report_fails_before_any_training(kind, image_folder, tmp_path, monkeypatch, capsys):
    """Issue 32: `evaluate --json ro/r.json` trained, then failed to write the report and lost the result."""
    import os

    import latentdd.evaluate.trainer

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the report's place was checked")

    monkeypatch.setattr(latentdd.evaluate.trainer, "evaluate_synthetic", no_training)
    if kind == "sys":
        if not os.path.isdir("/sys"):
            pytest.skip("no /sys")
        report = "/sys/latentdd-test/r.json"
    elif kind == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder anyway")
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        report = str(tmp_path / "ro" / "r.json")
    else:
        (tmp_path / "r.json").mkdir()
        report = str(tmp_path / "r.json")
    assert main(["evaluate", "--images", str(image_folder), *D, "--json", report, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report (--json)" in err and "Traceback" not in err, err


# Image-folder datasets whose images do not share one channel count: (id, the files written in color among
# gray ones, a substring the message must hold). Issue 32 (6): one color image among gray ones failed after
# the VAE fit ("expected dataset images (B, 3, 8, 8); got (8, 1, 8, 8)"), naming no file.
MIXED_FOLDERS = [
    ("one-color-image-among-gray-ones", ["train/b/001.png"],
     "mixes gray and color images: 1 of 8 are color (ROOT/train/b/001.png), the others gray; set dataset.channels"),
    ("one-color-image-in-the-test-split", ["val/a/000.png"], "ROOT/val mixes gray and color images"),
    ("a-color-test-split-of-a-gray-train-split", ["val/a/000.png", "val/a/001.png", "val/b/000.png", "val/b/001.png"],
     "the test split ROOT/val holds 3-channel images (e.g. ROOT/val/a/000.png) but the train split 1-channel ones"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("color, needle", [c[1:] for c in MIXED_FOLDERS], ids=[c[0] for c in MIXED_FOLDERS])
def test_mixed_gray_and_color_images_are_named_before_any_fit(color, needle, make_class_tree, write_png, tmp_path,
                                                              monkeypatch, capsys):
    import numpy as np

    import latentdd.pipelines.distill

    def no_fit(*args, **kwargs):
        raise AssertionError("the VAE was fitted before the images were checked")

    monkeypatch.setattr(latentdd.pipelines.distill, "fit_vae", no_fit)
    root = tmp_path / "root"
    make_class_tree(root / "train", {"a": 4, "b": 4}, size=(8, 8), rgb=False)
    make_class_tree(root / "val", {"a": 2, "b": 2}, size=(8, 8), rgb=False)
    for name in color:
        write_png(root / name, np.full((8, 8, 3), 200, dtype=np.uint8))
    argv = ["fit-vae", "--dataset", "imagefolder", "--root", str(root), "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentdd fit-vae: error: ") and "Traceback" not in err
    assert needle.replace("ROOT", str(root)) in err, err
