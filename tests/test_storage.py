"""Which folders latentdd replaces, safe swaps and leftovers, checkpoints without pickle."""

from __future__ import annotations

import os
import pickle
import shutil
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
def test_a_planted_pickle_checkpoint_is_never_loaded(tmp_path):
    flag = tmp_path / "pwned"
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "matching_checkpoint.safetensors").write_bytes(pickle.dumps(_Payload(flag)))
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
    assert not (out / io.SWAP_MARKER).exists()  # put back as it was before the swap


def _killed_before_the_swap(out: Path, monkeypatch) -> Path:
    """Export into `out` and kill the export at its swap -> the temporary sibling it leaves."""
    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # a kill runs no cleanup
    monkeypatch.setattr("latentdd.export.replace_dir", killed)
    with pytest.raises(KeyboardInterrupt):
        export_image_folder(make_synthetic(seed=1), out, overwrite=True)
    monkeypatch.undo()
    (stale,) = [p for p in out.parent.iterdir() if ".tmp-" in p.name]
    return stale


@pytest.mark.bad_input
def test_stale_temporary_folders_are_cleaned_and_refused_by_evaluate(tmp_path, monkeypatch):
    out = export_image_folder(make_synthetic(seed=0), tmp_path / "out")
    stale = _killed_before_the_swap(out, monkeypatch)
    with pytest.raises(DataError, match="temporary folder"):
        load_image_folder(stale)
    export_image_folder(make_synthetic(seed=2), out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not (out / io.SWAP_MARKER).exists()  # a finished folder carries no swap marker


def _user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "data.txt").write_text("precious\n")
    return path


@pytest.mark.bad_input
@pytest.mark.parametrize("name", ["out.tmp-20261207", "out.tmp-precious", "out.old-20261207",
                                  "out.tmp-0123456789abcdef", "out.old-0123456789abcdef"])
def test_folders_named_like_temporaries_but_not_made_by_latentdd_are_left_alone(tmp_path, name):
    """A user's `out.tmp-...` / `out.old-...` (named like a swap sibling, without latentdd's swap marker)
    is neither removed nor renamed to `out` by a write of `out`, and load_image_folder reads it."""
    mine = _user_folder(tmp_path / name)
    export_image_folder(make_synthetic(seed=0), tmp_path / "out")
    export_image_folder(make_synthetic(seed=1), tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", name])
    assert [p.name for p in mine.iterdir()] == ["data.txt"] and (mine / "data.txt").read_text() == "precious\n"
    assert not io.is_temporary(mine)


@pytest.mark.bad_input
def test_a_copied_swap_marker_does_not_make_a_user_folder_latentdds(tmp_path, monkeypatch):
    """The marker must name the folder it sits in: a leftover's marker copied into another folder proves nothing."""
    out = export_image_folder(make_synthetic(seed=0), tmp_path / "out")
    stale = _killed_before_the_swap(out, monkeypatch)
    mine = _user_folder(tmp_path / "out.tmp-0123456789abcdef")
    (mine / io.SWAP_MARKER).write_bytes((stale / io.SWAP_MARKER).read_bytes())
    io.repair(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", mine.name]
    assert (mine / "data.txt").read_text() == "precious\n"


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


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.bad_input
@pytest.mark.parametrize("argv, name", [
    (["distill", "--dataset", "digits", "--vae", "pixel", "--ipc", "1", "--cache-dir", "CACHE"], "o.tmp-20261207"),
    (["baseline", "--dataset", "digits", "--ipc", "1"], "o.tmp-precious"),
    (["baseline", "--dataset", "digits", "--ipc", "1"], "o.old-20261207"),
], ids=["distill-next-to-tmp-date", "baseline-next-to-tmp-word", "baseline-next-to-old-date"])
def test_a_write_keeps_user_folders_named_like_its_temporaries_byte_for_byte(tmp_path, argv, name):
    """Issue 32, defect 1: these commands deleted `o.tmp-...` or renamed `o.old-...` to `o` (then failed)."""
    from latentdd.cli import main

    mine = _user_folder(tmp_path / name)
    (mine / "sub").mkdir()
    (mine / "sub" / "more.bin").write_bytes(bytes(range(256)))
    before = _snapshot(mine)
    argv = [str(tmp_path / "cache") if a == "CACHE" else a for a in argv]
    assert main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert _snapshot(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == sorted(["o", name])
