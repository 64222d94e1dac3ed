"""Which folders latentdd replaces, safe swaps and leftovers, checkpoints without pickle."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from latentdd import io
from latentdd.distill import DistillContext, make_distiller
from latentdd.errors import DataError, LatentDDError
from latentdd.export import export_image_folder, load_image_folder
from latentdd.latents.types import Latents
from latentdd.pipelines.distill import distill_to_folder
from tests.test_export import make_synthetic


class _Payload:
    """Unpickling this runs a command that leaves a file behind."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


@pytest.mark.bad_input
@pytest.mark.parametrize("name", ["bacon_checkpoint.pt", "bacon_checkpoint.safetensors", "matching_checkpoint.safetensors"])
def test_a_planted_pickle_checkpoint_is_never_loaded(tmp_path, name):
    flag = tmp_path / "pwned"
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / name).write_bytes(pickle.dumps(_Payload(flag)))
    x = torch.randn(30, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    latents = Latents(x, torch.arange(3).repeat_interleave(10), ["a", "b", "c"])
    tiny = {"iterations": 2, "width": 8, "pool_start": 1, "pool_max": 1, "batch_real": 4, "net_batch": 8,
            "train_steps": 1, "checkpoint_every": 1}
    syn = make_distiller("bacon", **tiny).distill(latents, 1, seed=0,
                                                  context=DistillContext(checkpoint_dir=tmp_path / "ckpt"))
    assert not flag.exists() and syn.extras["resumed_from"] == 0


def _foreign_out(tmp_path, kind: str):
    """An --out latentdd did not write: a folder holding data.txt, or a plain file; both hold "precious"."""
    out = tmp_path / "notours"
    if kind == "folder":
        out.mkdir()
        (out / "data.txt").write_text("precious")
    else:
        out.write_text("precious")
    return out


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_distill_overwrite_refuses_what_latentdd_did_not_write_before_any_work(tmp_path, kind):
    out = _foreign_out(tmp_path, kind)
    with pytest.raises(LatentDDError, match="refusing to replace"):
        distill_to_folder(None, "kmeans", 1, 0, out, overwrite=True)  # space None: fails before using it
    assert (out / "data.txt" if kind == "folder" else out).read_text() == "precious"


@pytest.mark.bad_input
def test_an_unwritable_output_fails_before_any_work(tmp_path):
    if not Path("/sys").is_dir():
        pytest.skip("no /sys")
    with pytest.raises(LatentDDError, match="cannot write the output"):
        distill_to_folder(None, "kmeans", 1, 0, Path("/sys/latentdd-test-out"), overwrite=True)


def test_a_kill_between_the_two_renames_of_a_swap_is_repaired(tmp_path, monkeypatch):
    out = export_image_folder(make_synthetic(seed=0), tmp_path / "out")
    real, calls = os.rename, []

    def dies_after_first(src, dst):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt("killed")
        real(src, dst)

    monkeypatch.setattr(os, "rename", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        export_image_folder(make_synthetic(seed=1), out, overwrite=True)
    monkeypatch.setattr(os, "rename", real)
    old = [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert not out.exists() and len(old) == 1 and (old[0] / "manifest.json").is_file()  # the old copy is findable
    io.repair(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and len(load_image_folder(out)) == 6


@pytest.mark.bad_input
def test_stale_temporary_folders_are_cleaned_and_refused_by_evaluate(tmp_path):
    out = export_image_folder(make_synthetic(seed=0), tmp_path / "out")
    stale = tmp_path / "out.tmp-abcd1234"
    export_image_folder(make_synthetic(seed=1), stale)  # what an export killed before its swap leaves
    with pytest.raises(DataError, match="temporary folder"):
        load_image_folder(stale)
    export_image_folder(make_synthetic(seed=2), out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_folder_and_a_marked_folder_are_replaceable(tmp_path):
    (tmp_path / "empty").mkdir()
    io.check_replaceable(tmp_path / "empty")
    io.claim_folder(tmp_path / "run", "run")
    (tmp_path / "run" / "results.md").write_text("x")
    io.check_replaceable(tmp_path / "run")
    export_image_folder(make_synthetic(), tmp_path / "run", overwrite=True)


def _read_only_place(tmp_path: Path, kind: str) -> Path:
    """A location no output can be written to: under /sys, or in a folder chmod 0o555 (not for root)."""
    if kind == "sys":
        if not Path("/sys").is_dir():
            pytest.skip("no /sys")
        return Path("/sys/latentdd-test-out")
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder anyway")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked / "out"


def _no_fitting(monkeypatch):
    import latentdd.pipelines.distill

    def fail(*args, **kwargs):
        raise AssertionError("the VAE was loaded or fitted before the output was checked")

    monkeypatch.setattr(latentdd.pipelines.distill, "load_or_fit_vae", fail)


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["sys", "chmod"])
@pytest.mark.parametrize("command", ["distill", "run"])
def test_an_unwritable_out_fails_before_the_vae_is_fitted(tmp_path, monkeypatch, capsys, kind, command):
    from latentdd.cli import main

    out = _read_only_place(tmp_path, kind)
    _no_fitting(monkeypatch)
    args = ["--dataset", "digits", "--vae", "fit", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--quiet"]
    args += ["--method", "kmeans", "--ipc", "1", "--overwrite"] if command == "distill" else ["--methods", "kmeans", "--ipc", "1"]
    assert main([command, *args]) == 2
    assert "cannot write the output" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["folder", "file"])
@pytest.mark.parametrize("command", ["run", "calibrate", "encode"])
def test_run_calibrate_and_encode_refuse_an_out_latentdd_did_not_write(tmp_path, monkeypatch, capsys, kind, command):
    """Each writes into --out in place (re-running resumes): a foreign folder or a file is refused
    before any work, and what it held survives."""
    from latentdd.cli import main
    from latentdd.pipelines import calibrate

    out = _foreign_out(tmp_path, kind)
    _no_fitting(monkeypatch)
    monkeypatch.setattr(calibrate, "random_real", lambda *a, **k: pytest.fail("calibrate started before the check"))
    cache = ["--cache-dir", str(tmp_path / "cache")]
    args = {"run": ["--methods", "kmeans", "--ipc", "1", *cache], "calibrate": [], "encode": ["--vae", "fit", *cache]}
    assert main([command, "--dataset", "digits", *args[command], "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to replace or write into {out}" in err and "choose another --out" in err
    assert (out / "data.txt" if kind == "folder" else out).read_text() == "precious"
    if kind == "folder":
        assert sorted(p.name for p in out.iterdir()) == ["data.txt"]  # no marker, no reports/ written into it
