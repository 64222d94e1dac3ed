"""Atomic writes, and the one rule for which folders latentdd may replace or write into.

A folder is latentdd's when it holds the marker file `.latentdd.json` (written into every
output folder latentdd creates that has no manifest of its own), or a manifest.json /
plan.json whose `format` is one of latentdd's (image folders, latent caches), or a distill.json
or results.json of latentdd's shape: folders of versions before the marker, and the record
folders committed under results/, which hold none.
Only such a folder, or an empty one, is ever replaced (`--overwrite`) or written into.

Whole folders are written as a sibling `<name>.tmp-<token>` and swapped in by `replace_dir`;
the old folder sits at `<name>.old-<token>` during the swap. A process killed on the way
leaves those siblings behind, and the next write of the same output (`start_output`) puts a
missing folder back from its `.old-` copy and removes the rest. A sibling counts as latentdd's
only if it holds the swap marker `.latentdd-swap.json`, written into it before anything else,
whose `for` and `token` repeat the sibling's own name: a folder a user named `o.tmp-20261207`
or `o.old-backup` is never removed or renamed (and neither is a leftover of a version before
the swap marker). One writer per output at a time: a second one would take the first one's
siblings as stale.

Checksums of what latentdd stores and reads back: `file_sha256` of a file's bytes (the latent
cache's shards, a teacher's weights), and `json_sha256`, a JSON record's own content hash (a
report, a teacher's record), stored in the record under a field of its own and computed over
the rest. Both detect a file damaged, truncated or edited by hand since it was written; neither
is a signature (whoever edits a record can compute its hash again).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from latentdd.errors import LatentDDError, OutputExistsError

MARKER = ".latentdd.json"
_FORMATS = ("latentdd-image-folder", "latentdd-latent-cache")
SWAP_MARKER = ".latentdd-swap.json"
_SIBLING = re.compile(r"(?P<name>.+)\.(?P<kind>tmp|old)-(?P<token>[0-9a-f]{16})")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


# --- the shape of what was read back ----------------------------------------------------
# JSON that latentdd reads back (manifests, plans) holds what it wrote only if nothing damaged it:
# its readers check every field with these before they use one.


def is_int(value: Any) -> bool:
    """Whether `value` is an integer (JSON's true is an int to Python, but no count or index)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether `value` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def list_of(value: Any, check) -> bool:
    """Whether `value` is a list whose every item passes `check`."""
    return isinstance(value, list) and all(map(check, value))


def read_json_fields(path: Path, fields: dict[str, type]) -> dict | None:
    """The JSON mapping in `path` if it holds every field of `fields` (a dotted name, "input.image_size",
    for a nested one) with a value of its type (a bool is no int), else None: missing or damaged."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for name, kind in fields.items():
            value = data
            for key in name.split("."):
                value = value[key]
            if not isinstance(value, kind) or (kind is int and not is_int(value)):
                return None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return data


# --- checksums beside files: `<file>.sha256` in `sha256sum` format (`sha256sum -c` checks it) ---


def checksum_path(path: Path) -> Path:
    """Where the sha256 of `path` is kept: `<path>.sha256`."""
    return path.with_name(path.name + ".sha256")


def file_sha256(path: str | Path) -> str:
    """sha256 hex of the bytes of the file at `path`, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksum(path: Path, digest: str) -> None:
    """Record `digest` as the sha256 of `path` (written atomically, before or after `path` itself)."""
    atomic_write_text(checksum_path(path), f"{digest}  {path.name}\n")


def stored_checksum(path: Path) -> str | None:
    """The sha256 recorded beside `path`, or None when there is none (or it cannot be read)."""
    try:
        return checksum_path(path).read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def json_sha256(record: dict, *, without: str) -> str:
    """The content hash of a JSON record: sha256 of its canonical JSON (sorted keys, no spaces), taken as it
    reads back from its file (`atomic_write_json`), the field `without` -- where the hash is stored -- left out."""
    content = json.loads(json.dumps({k: v for k, v in record.items() if k != without}, default=str))
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_json_sha256(record: dict, field: str) -> dict:
    """`record` with its content hash (`json_sha256`) stored under `field`, to be written as it is."""
    return record | {field: json_sha256(record, without=field)}


def json_sha256_problem(record: dict, field: str) -> str | None:
    """What is wrong with the content hash a record read back holds under `field` (it is missing, or does
    not match the content), as the end of a sentence naming the file; None when it matches."""
    stored = record.get(field)
    if stored is None:
        return f"holds no {field} (written by a latentdd that did not record one, or edited)"
    if stored != json_sha256(record, without=field):
        return f"does not match its {field}: it was edited or damaged after latentdd wrote it"
    return None


# --- which folders are latentdd's ------------------------------------------------------


def _json(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def is_latentdd_folder(folder: Path) -> bool:
    """Whether `folder` is a folder latentdd wrote (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    marker = _json(folder / MARKER)
    if isinstance(marker, dict) and marker.get("written_by") == "latentdd":
        return True
    for name in ("manifest.json", "plan.json"):
        manifest = _json(folder / name)
        if isinstance(manifest, dict) and manifest.get("format") in _FORMATS:
            return True
    distill = _json(folder / "distill.json")  # a distill folder without the marker (see the module docstring)
    if isinstance(distill, dict) and {"method", "params", "record"} <= set(distill):
        return True
    results = _json(folder / "results.json")  # a run / compare / calibrate folder without the marker (ditto)
    return isinstance(results, list) and bool(results) and \
        all(isinstance(r, dict) and {"method", "ipc", "mean"} <= set(r) for r in results)


def _swap_marker(name: str, kind: str, token: str) -> dict:
    return {"written_by": "latentdd", "kind": kind, "for": name, "token": token}


def _swap_sibling(path: Path) -> re.Match | None:
    """The name match if `path` is a swap sibling latentdd made (a `.tmp-` or `.old-` folder holding the
    swap marker that names it), else None. The name alone proves nothing: users name folders too."""
    m = _SIBLING.fullmatch(path.name)
    if m is None or path.is_symlink() or not path.is_dir():
        return None
    return m if _json(path / SWAP_MARKER) == _swap_marker(m["name"], m["kind"], m["token"]) else None


def is_temporary(path: Path) -> bool:
    """Whether `path` or its parent is latentdd's temporary folder or the old copy of a swap."""
    path = Path(path).expanduser().absolute()
    return any(_swap_sibling(p) is not None for p in (path, path.parent))


def check_replaceable(out: Path) -> None:
    """LatentDDError unless `out` is an empty folder or one latentdd wrote."""
    if out.is_dir() and (is_latentdd_folder(out) or not any(out.iterdir())):
        return
    what = "a folder latentdd did not write" if out.is_dir() else "not a folder"
    raise LatentDDError(f"refusing to replace or write into {out}: it is {what} (no {MARKER} or latentdd manifest); "
                        "choose another --out or remove it yourself")


def _cannot_write(where: Path, err: OSError) -> LatentDDError:
    return LatentDDError(f"cannot write the output beside {where}: {err.strerror or err}; "
                         "choose another --out in a folder you can write")


def check_writable_file(path: Path, what: str) -> None:
    """LatentDDError unless a file can be written at `path` (its folder is created if missing): for a
    file written after a long computation, so that a read-only place fails before the work, not after.
    what: how the message names it (e.g. "the report (--json)")."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise LatentDDError(f"cannot write {what} to {path}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise LatentDDError(f"cannot write {what} to {path}: {err.strerror or err}; "
                            "choose a place you can write") from None


def claim_folder(out: Path, kind: str) -> Path:
    """Make `out` a folder that latentdd writes into in place (a run, a calibration, a latent cache).

    `out` may be missing, empty, or latentdd's; else LatentDDError, before any work. Writes
    the marker, so a failure to write shows now rather than after hours of training.
    """
    out = Path(out).expanduser()
    if out.exists() or out.is_symlink():
        check_replaceable(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MARKER).exists():
            atomic_write_json(out / MARKER, {"written_by": "latentdd", "kind": kind})
    except OSError as err:
        raise _cannot_write(out, err) from err
    return out


def mark(folder: Path, kind: str) -> None:
    """Write the marker into `folder` (a folder about to be swapped in by `replace_dir`)."""
    atomic_write_json(Path(folder) / MARKER, {"written_by": "latentdd", "kind": kind})


# --- whole folders, swapped in ----------------------------------------------------------


def _siblings(out: Path, kind: str) -> list[Path]:
    """`out`'s `.tmp-` or `.old-` siblings that latentdd made (`_swap_sibling`), oldest first."""
    if not out.parent.is_dir():
        return []
    return sorted((p for p in out.parent.iterdir()
                   if (m := _swap_sibling(p)) and m["name"] == out.name and m["kind"] == kind),
                  key=lambda p: p.stat().st_mtime)


def repair(out: Path) -> None:
    """Undo what an interrupted write of `out` left: put `out` back from its `.old-` copy if it is
    missing, then remove the stale `.tmp-` and `.old-` siblings. Only siblings latentdd made are
    touched (`_swap_sibling`); an `.old-` one must also still be a latentdd folder, as it was when
    it was renamed aside."""
    old = [p for p in _siblings(out, "old") if is_latentdd_folder(p)]
    if old and not (out.exists() or out.is_symlink()):
        back = old.pop()  # the newest: the folder that was being replaced
        os.rename(back, out)
        (out / SWAP_MARKER).unlink(missing_ok=True)
    for stale in _siblings(out, "tmp") + old:
        shutil.rmtree(stale, ignore_errors=True)


def _sibling_name(out: Path, kind: str) -> tuple[Path, str]:
    token = secrets.token_hex(8)
    return out.with_name(f"{out.name}.{kind}-{token}"), token


def start_output(out: Path, *, overwrite: bool) -> Path:
    """Check that `out` may be written, clean what an interrupted write left, and create the
    temporary sibling the new folder is written into -> its path (pass it to `replace_dir`).

    OutputExistsError if `out` exists and not `overwrite`; LatentDDError if it is not
    replaceable (`check_replaceable`) or its parent cannot be written -- all before any work.
    The sibling holds the swap marker from the start, so a kill at any later point leaves a
    folder the next write can prove is latentdd's.
    """
    out = Path(out)
    repair(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{out} already exists; choose another --out or pass --overwrite")
        check_replaceable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp, token = _sibling_name(out, "tmp")
        tmp.mkdir(mode=0o700)  # as tempfile.mkdtemp made it; fails rather than share an existing folder
        try:
            atomic_write_json(tmp / SWAP_MARKER, _swap_marker(out.name, "tmp", token))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp
    except OSError as err:
        raise _cannot_write(out, err) from err


def check_output(out: Path, *, overwrite: bool) -> None:
    """The checks of `start_output` (which is called again when writing), leaving nothing behind:
    for a command that fits a VAE or distils for a long time before it writes `out`."""
    tmp = start_output(Path(out), overwrite=overwrite)
    (tmp / SWAP_MARKER).unlink()
    tmp.rmdir()


def replace_dir(tmp: Path, out: Path, *, overwrite: bool) -> None:
    """Rename the finished folder `tmp` (from `start_output`) to `out` (a sibling), replacing `out`
    only if `overwrite`.

    An existing `out` (latentdd's, `check_replaceable`) is marked and renamed aside to
    `<out>.old-<token>` first and deleted after the swap; if the swap fails it is put back. A
    process killed between the two renames leaves the old folder at `.old-`, which the next
    `start_output` puts back. An empty `out` is simply removed: there is nothing to put back.
    """
    (tmp / SWAP_MARKER).unlink(missing_ok=True)  # the finished folder is no longer a temporary
    if not (out.exists() or out.is_symlink()):
        os.rename(tmp, out)
        return
    if not overwrite:  # appeared while we were writing
        raise OutputExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    check_replaceable(out)
    if not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
        return
    aside, token = _sibling_name(out, "old")
    if not out.is_symlink():  # a link's target is not ours to write into; a killed swap leaves the link aside
        atomic_write_json(out / SWAP_MARKER, _swap_marker(out.name, "old", token))
    os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(aside, out)  # put the old copy back rather than leave neither
        if not out.is_symlink():
            (out / SWAP_MARKER).unlink(missing_ok=True)
        raise
    if aside.is_symlink():  # out named a link: remove it, not its target
        aside.unlink()
    else:
        shutil.rmtree(aside, ignore_errors=True)
