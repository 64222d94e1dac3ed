"""Issue 34's teacher-aware pieces: static soft labels (protocol static), RDED-style selection and stitching
(distiller rded), and matching in the teacher's feature space (networks "teacher")."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentdd.data import SyntheticImages, load_dataset
from latentdd.distill import DistillContext, make_distiller
from latentdd.distill.matching.sources import TeacherEmbedding
from latentdd.distill.base import class_seeds
from latentdd.distill.disagreement import DisagreementDistiller, grow, round_sizes
from latentdd.distill.quantize import kmeans_sklearn, nearest_centroid
from latentdd.distill.rded import select_typical
from latentdd.errors import DataError
from latentdd.evaluate import EvalConfig, evaluate_synthetic, train_model
from latentdd.evaluate.teacher import TeacherConfig, fit_teacher, teacher_log_probs
from latentdd.evaluate.trainer import channel_stats, tempered
from latentdd.latents.types import Latents
from latentdd.vae import PixelVAE


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    train, test = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit_teacher(train, test, TeacherConfig(preset="quick", width=16, depth=2, epochs=6, lr=3e-3, batch_size=64,
                                                      cache_dir=str(tmp_path_factory.mktemp("cache"))))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space(digits):
    """The digits train split as latents of the identity (pixel) space, with its decoder."""
    train, _ = digits
    return Latents(train.images, train.labels, list(train.class_names)), PixelVAE(1, 8).decode


# ---------------------------------------------------------------------------------------
# rded


def test_select_typical_keeps_the_lowest_score_of_each_group_and_fills_empty_groups():
    scores = np.array([0.9, 0.1, 0.5, 0.3, 0.2, 0.05])
    groups = np.array([0, 0, 1, 1, 2, 2])
    assert select_typical(scores, groups, 3).tolist() == [5, 1, 3]  # each group's lowest, most typical first
    assert select_typical(scores, None, 2).tolist() == [5, 1]
    # Group 2 of 3 has no member: the best candidate not yet chosen takes its place.
    assert select_typical(scores, np.array([0, 0, 1, 1, 1, 1]), 3).tolist() == [5, 1, 4]
    assert select_typical(np.array([0.2, 0.2, 0.1]), None, 2).tolist() == [2, 0]  # ties: the lower index


def test_rded_keeps_the_candidates_the_teacher_finds_most_typical_of_their_class(space, teacher):
    latents, decode = space
    context = DistillContext(decode=decode, teacher=teacher)
    out = make_distiller("rded", diversity="none", factor=1, candidates=10_000).distill(latents, 3, seed=0,
                                                                                      context=context)
    ce = F.cross_entropy(teacher(latents.latents), latents.labels, reduction="none").numpy()
    for k in range(10):
        members = np.flatnonzero(latents.labels.numpy() == k)
        want = members[np.lexsort((members, ce[members]))[:3]]  # the class's three lowest cross-entropies
        assert out.extras["indices"][3 * k : 3 * k + 3] == want.tolist()
        assert torch.equal(out.latents[3 * k : 3 * k + 3], latents.latents[torch.from_numpy(want)])
    assert out.extras["teacher"]["key"] == teacher.record["key"] and out.tile_factor == 1


@pytest.mark.parametrize("diversity", ["latent", "labels"])
def test_rded_medoid_keeps_the_member_nearest_its_cluster_centroid(space, teacher, diversity):
    latents, decode = space
    context = DistillContext(decode=decode, teacher=teacher)
    # One cluster a class (IPC 1, factor 1): its centroid is the class mean, its medoid the member nearest it, in
    # the latent space or in the space of the teacher's log-probabilities.
    out = make_distiller("rded", diversity=diversity, pick="medoid", factor=1, candidates=10_000).distill(
        latents, 1, seed=0, context=context)
    flat = (latents.latents.flatten(1) if diversity == "latent" else
            F.log_softmax(teacher(decode(latents.latents).clamp(0, 1)), dim=1)).double()
    for k in range(10):
        members = np.flatnonzero(latents.labels.numpy() == k)
        points = flat[torch.from_numpy(members)]
        distance = ((points - points.mean(0)) ** 2).sum(1)
        assert out.extras["indices"][k] == members[int(distance.argmin())]
    with pytest.raises(DataError, match="pick medoid .* needs diversity"):
        make_distiller("rded", diversity="none", pick="medoid").distill(latents, 1, seed=0, context=context)


def test_rded_stitches_factor_squared_diverse_typical_latents_into_each_stored_image(space, teacher):
    latents, decode = space
    context = DistillContext(decode=decode, teacher=teacher)
    rded = make_distiller("rded", candidates=10_000)  # every latent a candidate; diversity teacher, factor 2
    out = rded.distill(latents, 2, seed=0, context=context)
    assert out.latents.shape == (10 * 2 * 4, 1, 8, 8) and out.tile_factor == 2
    assert out.labels.tolist() == [k for k in range(10) for _ in range(8)]
    assert out.extras["factorization"] == {"factor": 2, "tiles": "decoded", "latents_matched_per_class": 8}
    indices = np.array(out.extras["indices"])
    assert len(set(indices.tolist())) == len(indices)
    ce = F.cross_entropy(teacher(latents.latents), latents.labels, reduction="none").numpy()
    plain = make_distiller("rded", candidates=10_000, diversity="none").distill(latents, 2, seed=0, context=context)
    # The most typical member of each of 8 groups of teacher features, most typical first: the first is the
    # class's most typical latent (its group's too); the others are not simply the next most typical.
    for k in range(10):
        members = np.flatnonzero(latents.labels.numpy() == k)
        chosen = indices[8 * k : 8 * k + 8]
        assert chosen[0] == members[np.argmin(ce[members])] and np.all(np.diff(ce[chosen]) >= 0)
    assert set(indices.tolist()) != set(plain.extras["indices"])
    again = rded.distill(latents, 2, seed=0, context=context)
    assert torch.equal(again.latents, out.latents)  # same seed, same set
    from latentdd.render import render_set
    from latentdd.render.vae import VAEDecoder

    class Identity:
        def to_vae(self, x):
            return x

        def from_vae(self, x):
            return x

    images = render_set(VAEDecoder(PixelVAE(1, 8), Identity()), out, seed=0)  # 4 latents pooled into each image
    assert images.images.shape == (20, 1, 8, 8)


def test_rded_without_a_teacher_is_a_clear_error(space):
    latents, decode = space
    with pytest.raises(DataError, match="scores decoded latents with a teacher"):
        make_distiller("rded").distill(latents, 1, seed=0, context=DistillContext(decode=decode))


# ---------------------------------------------------------------------------------------
# disagreement


def test_grow_takes_the_highest_disagreement_of_each_cluster_not_yet_held_then_the_highest_left():
    kl = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.8])
    groups = np.array([0, 0, 1, 1, 2, 2])
    # group 0 is held (candidate 1): the free groups 2 and 1 give their best first
    assert grow(kl, groups, [1], 2) == [5, 3]
    assert grow(kl, groups, [1], 4) == [5, 3, 0, 4]  # every group held: then by disagreement
    assert grow(kl, groups, [], 3) == [0, 5, 3]  # ties (0.8 at 1 and 5): group 0 is held by then
    assert grow(np.array([0.5, 0.5]), np.array([0, 1]), [], 1) == [0]  # ties: the lower index
    assert round_sizes(5, 2) == [3, 2] and round_sizes(1, 3) == [1] and round_sizes(0, 2) == []


def test_disagreement_starts_with_rded_s_picks_and_adds_where_the_student_disagrees(space, teacher, monkeypatch):
    latents, decode = space
    context = DistillContext(decode=decode, teacher=teacher)
    kw = {"candidates": 60, "start": 0.5, "rounds": 1}
    rded = make_distiller("rded", factor=1, candidates=60).distill(latents, 4, seed=0, context=context)
    # A student that knows nothing (uniform logits): KL(teacher || uniform) = log K - H(teacher), so the picks
    # after the start are the candidates the teacher is surest of, one per cluster not yet held.
    monkeypatch.setattr(DisagreementDistiller, "_proxy",
                        lambda self, *a, **k: (lambda x: torch.zeros(len(x), 10)))
    out = make_distiller("disagreement", **kw).distill(latents, 4, seed=0, context=context)
    assert out.latents.shape == (40, 1, 8, 8) and out.labels.tolist() == [k for k in range(10) for _ in range(4)]
    indices = np.array(out.extras["indices"]).reshape(10, 4)
    assert np.array_equal(indices[:, :2], np.array(rded.extras["indices"]).reshape(10, 4)[:, :2])
    logp = F.log_softmax(teacher(latents.latents) / 4.0, dim=1)
    to_uniform = (logp.exp() * (logp + np.log(10))).sum(1).double().numpy()
    for k in range(10):
        members = np.flatnonzero(latents.labels.numpy() == k)
        pool = np.sort(np.random.default_rng(class_seeds(0, k)[0]).choice(members, size=60, replace=False))
        features = teacher.features(latents.latents[torch.from_numpy(pool)]).float().numpy()
        groups, _ = nearest_centroid(features, kmeans_sklearn(features, 4, niter=100, restarts=1,
                                                               seed=class_seeds(0, k, 2)[1]))
        start = [int(np.flatnonzero(pool == i)[0]) for i in indices[k, :2]]
        assert pool[grow(to_uniform[pool], groups, start, 2)].tolist() == indices[k, 2:].tolist()
    assert out.extras["typical_first"] == 2 and out.extras["rounds"][0]["added_per_class"] == 2
    assert out.extras["teacher"]["key"] == teacher.record["key"]


def test_disagreement_trains_its_proxy_students_and_repeats_itself(space, teacher, torch_one_thread):
    latents, decode = space
    context = DistillContext(decode=decode, teacher=teacher)
    method = make_distiller("disagreement", candidates=30, start=0.25, rounds=2, proxy_epochs=2, proxy_width=8)
    out = method.distill(latents, 4, seed=0, context=context)
    assert [r["added_per_class"] for r in out.extras["rounds"]] == [2, 1]  # one typical, then 3 over 2 rounds
    assert all(np.isfinite(r["pool_disagreement_mean"]) and r["seconds"] > 0 for r in out.extras["rounds"])
    assert len(set(out.extras["indices"])) == 40
    assert torch.equal(method.distill(latents, 4, seed=0, context=context).latents, out.latents)
    with pytest.raises(DataError, match="scores decoded latents with a teacher"):
        method.distill(latents, 1, seed=0, context=DistillContext(decode=decode))
    with pytest.raises(DataError, match="start is the share"):
        make_distiller("disagreement", start=0.0)


# ---------------------------------------------------------------------------------------
# Matching in the teacher's feature space


def test_the_teacher_as_a_matching_network_embeds_the_run_s_inputs_as_the_teacher_does(teacher, digits):
    x = digits[0].images[:16]
    mean, std = torch.tensor([0.3]), torch.tensor([0.4])
    net = TeacherEmbedding(teacher, mean, std)
    assert torch.allclose(net.embed((x - mean) / std), teacher.features(x), atol=1e-5)
    assert torch.allclose(net((x - mean) / std), teacher(x), atol=1e-5)


def test_dm_in_the_teacher_s_feature_space_moves_the_set_and_leaves_the_teacher_as_it_was(space, teacher):
    latents, decode = space
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    dm = make_distiller("dm", embedding="pixel", networks="teacher", iterations=3, lr=0.05, checkpoint_every=1)
    out = dm.distill(latents, 1, seed=0, context=DistillContext(decode=decode, teacher=teacher))
    start = make_distiller("dm", embedding="pixel", iterations=1, lr=1e-12).distill(
        latents, 1, seed=0, context=DistillContext(decode=decode))  # the same random real start, hardly moved
    assert not torch.allclose(out.latents, start.latents, atol=1e-4)
    assert out.extras["networks"] == "teacher" and out.extras["teacher"]["key"] == teacher.record["key"]
    assert len(out.extras["loss_curve"]) == 3 and out.extras["loss_curve"][-1]["match"] < out.extras["loss_curve"][0]["match"]
    assert all(torch.equal(v, before[k]) for k, v in teacher.model.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    bacon = make_distiller("bacon", embedding="pixel", networks="teacher", loss="bacon-reference", iterations=2)
    out = bacon.distill(latents, 1, seed=0, context=DistillContext(decode=decode, teacher=teacher))
    assert out.extras["networks"] == "teacher" and np.isfinite(out.extras["loss_curve"][-1]["ce"])
    with pytest.raises(DataError, match="networks 'teacher' needs a teacher"):
        dm.distill(latents, 1, seed=0, context=DistillContext(decode=decode))
    with pytest.raises(DataError, match="needs embedding 'pixel'"):
        make_distiller("dm", embedding="latent", networks="teacher")


def test_mtt_learned_labels_can_start_at_the_teacher_s_logits_of_the_decoded_set(space, teacher, tmp_path):
    latents, decode = space
    tiny = {"experts": 1, "buffer_epochs": 3, "max_start_epoch": 1, "expert_epochs": 2, "width": 8, "syn_steps": 2,
            "iterations": 1, "lr": 1e-12, "lr_labels": 1e-12, "learn_labels": True, "label_init": "teacher"}
    context = DistillContext(decode=decode, teacher=teacher, cache_dir=tmp_path)
    out = make_distiller("mtt", **tiny).distill(latents, 2, seed=0, context=context)
    want = F.softmax(teacher(decode(out.latents)), 1)  # neither the set nor the labels moved (lr 1e-12)
    assert torch.allclose(out.soft_labels, want, atol=1e-4)
    expert = make_distiller("mtt", **tiny | {"label_init": "expert"}).distill(latents, 2, seed=0, context=context)
    assert torch.allclose(expert.latents, out.latents, atol=1e-6) and not torch.allclose(expert.soft_labels, want, atol=1e-2)
    assert out.extras["label_init"] == "teacher" and out.extras["label_teacher"] == teacher.summary()
    with pytest.raises(DataError, match="label_init 'teacher' needs a teacher"):
        make_distiller("mtt", **tiny).distill(latents, 2, seed=0, context=DistillContext(decode=decode, cache_dir=tmp_path))
    with pytest.raises(DataError, match="set learn_labels: true and embedding: pixel"):
        make_distiller("mtt", label_init="teacher")


# ---------------------------------------------------------------------------------------
# Static soft labels


def tiny(protocol: str, **kw) -> EvalConfig:
    return EvalConfig.preset(protocol, **({"width": 8, "depth": 2, "epochs": 3, "batch_size": 16, "num_eval": 1,
                                           "compile": "off"} | kw))


def test_tempered_labels_are_the_softmax_of_the_logits_at_the_temperature():
    z = torch.randn(5, 7)
    assert torch.allclose(tempered(F.log_softmax(z, 1), 4.0), F.softmax(z / 4.0, 1), atol=1e-6)
    assert tempered(torch.tensor([[0.0, float("-inf")]]), 4.0).tolist() == [[1.0, 0.0]]  # a zero stays zero


def test_static_labels_of_unaugmented_images_train_as_the_online_teacher_does(teacher, digits):
    """Without augmentation the online teacher labels each image the same way every epoch: training on its
    labels computed once (static_kl) is the same training as labelling every batch (teacher_kl)."""
    train, _ = digits
    images, labels = train.images[:40], train.labels[:40]
    mean, std = channel_stats(train)
    plain = {"crop_scale": None, "hflip": False, "cutmix": 0.0, "optimizer": "sgd"}  # Adam magnifies rounding
    online = train_model(images, labels, num_classes=10, config=tiny("soft", **plain), mean=mean, std=std,
                         teacher=teacher)
    static = train_model(images, labels, num_classes=10, config=tiny("static", **plain), mean=mean, std=std,
                         soft_labels=tempered(teacher_log_probs(teacher, images), 4.0))
    for a, b in zip(online.state_dict().values(), static.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4)


def test_the_static_protocol_labels_a_set_without_labels_with_the_teacher_and_takes_a_set_s_own(teacher, digits):
    train, test = digits
    mean, std = channel_stats(train)
    pick = torch.arange(0, 200, 10)
    bare = SyntheticImages(train.images[pick], train.labels[pick], list(train.class_names))
    report = evaluate_synthetic(bare, test, tiny("static"), mean=mean, std=std, teacher=teacher, progress=False)
    evaluator = report.record["evaluator"]
    assert evaluator["labels"].startswith("static soft: the teacher's") and evaluator["protocol"] == "static"
    assert evaluator["teacher"]["key"] == teacher.record["key"] and evaluator["loss"].startswith("T^2 KL(label")
    own = dataclasses.replace(bare, soft_labels=F.one_hot(bare.labels, 10).float() * 0.9 + 0.01)
    report = evaluate_synthetic(own, test, tiny("static"), mean=mean, std=std, teacher=None, progress=False)
    assert report.record["evaluator"]["labels"] == "static soft: the set's own"
    assert report.record["evaluator"]["teacher"] is None
    with pytest.raises(DataError, match="carries none, so a teacher must label it"):
        evaluate_synthetic(bare, test, tiny("static"), mean=mean, std=std, progress=False)
    with pytest.raises(DataError, match="brings its own soft labels"):
        tiny("static", use_soft_labels=True)


def test_distill_rded_from_the_command_line_names_its_teacher(tmp_path):
    from latentdd.cli import main

    out = tmp_path / "rded"
    cache = tmp_path / "cache"
    assert main(["distill", "--dataset", "digits", "--vae", "pixel", "--method", "rded", "--ipc", "1", "--quiet",
                 "--param", "candidates=20", "--teacher.width", "8", "--teacher.depth", "2", "--teacher.epochs", "1",
                 "--cache-dir", str(cache), "--teacher-cache-dir", str(cache), "--out", str(out)]) == 0
    record = json.loads((out / "distill.json").read_text())
    assert record["record"]["method"]["teacher"]["key"] == record["extras"]["teacher"]["key"]
    assert (cache / "teacher" / record["extras"]["teacher"]["key"][:16] / "teacher.json").is_file()
    manifest = json.loads((out / "images" / "manifest.json").read_text())
    assert len(manifest["images"]) == 10  # one stored image a class, each 2 x 2 chosen latents


# ---------------------------------------------------------------------------------------
# Random real tiles


def test_random_real_tiles_pool_and_tile_four_random_real_images_of_a_class_into_each_stored_image(digits):
    from latentdd.nn.factorization import tile
    from latentdd.pipelines.baseline import random_real

    train, _ = digits
    tiled = random_real(train, 2, seed=3, tiles=2)
    drawn = torch.tensor(tiled.meta["method"]["train_indices"])  # 8 a class, class by class
    assert tiled.images.shape == (20, 1, 8, 8) and tiled.meta["method"]["tiles"] == 2
    assert tiled.labels.tolist() == [k for k in range(10) for _ in range(2)]
    for k in range(10):
        assert torch.equal(tiled.images[2 * k : 2 * k + 2], tile(train.images[drawn[8 * k : 8 * k + 8]], 2))
        assert bool((train.labels[drawn[8 * k : 8 * k + 8]] == k).all())


def test_a_run_scores_a_tiled_set_against_random_real_tiles_at_the_ipcs_where_a_set_is_tiled(tmp_path):
    import yaml

    from latentdd.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "teacher": {"width": 8, "depth": 2, "epochs": 1, "cache_dir": str(tmp_path / "cache")},
        "run": {"methods": [{"method": "rded", "params": {"candidates": 20}, "ipcs": [1]}], "ipcs": [1, 2],
                "random_real_subsets": 2, "random_real_tiles": 2}}))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--dataset", "digits", "--vae", "pixel", "--cache-dir",
                 str(tmp_path / "cache"), "--epochs", "2", "--width", "8", "--depth", "2", "--compile", "off",
                 "--num-eval", "1", "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "results.json").read_text())
    # IPC 2 has no tiled set, so no random real tiles either (4 times a training's cost, compared with nothing)
    assert [r.get("subset_of") for r in rows if r["ipc"] == 2 and r.get("subset_of")] == ["random-real (pixels)"] * 2
    assert not [r for r in rows if r["ipc"] == 2 and r.get("tiles")]
    rows = [r for r in rows if r["ipc"] == 1]
    rded = next(r for r in rows if r["method"].startswith("rded"))
    tiles = [r for r in rows if r.get("subset_of") == "random-real (pixels) tiles 2x2"]
    plain = [r for r in rows if r.get("subset_of") == "random-real (pixels)"]
    assert len(tiles) == 2 and len(plain) == 2 and rded["tiles"] == 2 and all(r["tiles"] == 2 for r in tiles)
    assert rded["ior"] == pytest.approx(rded["mean"] - np.mean([r["mean"] for r in tiles]))
    report = json.loads(open(tiles[0]["report"]).read())
    assert report["record"]["evaluator"]["factorization"] == {"factor": 2, "images_trained": 40}


# ---------------------------------------------------------------------------------------
# Boundary samples


def test_boundary_entropy_steps_raise_the_teacher_s_entropy_and_keep_every_image_in_its_class(space, teacher):
    latents, decode = space
    context = DistillContext(decode=decode, teacher=teacher)
    out = make_distiller("boundary", steps=5, lr=0.5).distill(latents, 2, seed=0, context=context)
    kmeans = make_distiller("kmeans").distill(latents, 2, seed=0)
    assert out.latents.shape == kmeans.latents.shape and not torch.equal(out.latents, kmeans.latents)
    h = out.extras["teacher_entropy"]
    assert np.mean(h["after"]) > np.mean(h["before"])
    assert out.extras["teacher_keeps_class"] == 1.0
    assert bool((teacher(decode(out.latents)).argmax(1) == out.labels).all())


def test_boundary_interpolation_goes_alpha_of_the_way_to_the_nearest_latent_of_the_runner_up_class(space, teacher):
    latents, decode = space
    context = DistillContext(decode=decode, teacher=teacher)
    out = make_distiller("boundary", move="interpolate", start="random", alpha=0.25, candidates=10_000,
                         keep_class=False).distill(latents, 1, seed=0, context=context)
    start = make_distiller("boundary", move="interpolate", start="random", alpha=0.0, candidates=10_000,
                           keep_class=False).distill(latents, 1, seed=0, context=context).latents  # alpha 0: the start
    x = latents.latents.flatten(1)
    for k in range(10):
        z0 = start[k]
        logits = teacher(decode(z0[None]))[0]
        logits[k] = float("-inf")
        j = int(logits.argmax())
        others = x[latents.labels == j]
        nearest = others[(others - z0.flatten()).square().sum(1).argmin()].view_as(z0)
        assert torch.allclose(out.latents[k], 0.75 * z0 + 0.25 * nearest, atol=1e-6)


def test_the_teacher_table_scores_each_set_against_the_random_real_of_its_tiling(tmp_path):
    """scripts/teacher_table.py on two hand-made runs: IOR against random real, or random real tiles for a tiled
    set, under each protocol; LRS from the hard-label HLR."""
    import importlib.util

    from latentdd.evaluate.scores import lrs
    from latentdd.pipelines.calibrate import full_data_accuracy

    spec = importlib.util.spec_from_file_location("teacher_table", "scripts/teacher_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)

    def run(name, rows, teacher=None):
        folder = tmp_path / name
        (folder / "reports").mkdir(parents=True)
        for i, row in enumerate(rows):  # the rows name where the run wrote them; the records were moved since
            row["report"] = f"/elsewhere/runs/{name}/reports/{i}.json"
            (folder / "reports" / f"{i}.json").write_text(json.dumps({"record": {"evaluator": {"teacher": teacher}}}))
        (folder / "results.json").write_text(json.dumps(rows))
        return folder

    def rows(plain, tiled, kmeans, rded):
        subsets = [{"method": f"random-real (pixels) s{i}", "ipc": 1, "mean": m, "std": 0.0, "n": 1,
                    "subset_of": "random-real (pixels)"} for i, m in enumerate(plain)]
        subsets += [{"method": f"random-real (pixels) tiles 2x2 s{i}", "ipc": 1, "mean": m, "std": 0.0, "n": 1,
                     "subset_of": "random-real (pixels) tiles 2x2", "tiles": 2} for i, m in enumerate(tiled)]
        return subsets + [{"method": "kmeans", "ipc": 1, "mean": kmeans, "std": 0.5, "n": 3},
                          {"method": "rded", "ipc": 1, "mean": rded, "std": 0.5, "n": 3, "tiles": 2}]

    teacher = {"name": "teacher:abc", "preset": "strong", "test_accuracy": 93.1, "epoch_seconds": 7200.0}
    hard = run("dsa", rows([50.0, 52.0], [60.0, 62.0], 70.0, 65.0))
    soft = run("soft", rows([80.0, 82.0], [84.0, 86.0], 80.0, 88.0), teacher)
    out = tmp_path / "table.md"
    assert table.main(["--runs", f"dsa={hard}", "--runs", f"soft={soft}", "--out", str(out)]) == 0
    text = out.read_text()
    full = full_data_accuracy("results/calibration_fashion_mnist", "fashion_mnist")
    kmeans = next(line for line in text.splitlines() if line.startswith("| kmeans |"))
    rded = next(line for line in text.splitlines() if line.startswith("| rded |"))
    assert "| +19.00 |" in kmeans and "| -1.00 |" in kmeans  # 70 - 51; 80 - 81
    assert "| +4.00 |" in rded and "| +3.00 |" in rded  # against the tiles: 65 - 61; 88 - 85
    assert f"| {lrs(3.0, full - 65.0):.2f} |" in rded
    assert "| random real tiles 2x2 | 1 | 61.00 ± 1.00 (2 subsets) | 0 |" in text
    assert "teacher:abc (preset strong), 93.10% on test, 2.00 h to fit" in text
