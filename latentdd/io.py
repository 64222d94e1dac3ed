"""Atomic writes: write a sibling temporary file or folder, then rename it into place."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from latentdd.errors import OutputExistsError


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


def replace_dir(tmp: Path, out: Path, *, overwrite: bool) -> None:
    """Rename the finished folder `tmp` to `out` (a sibling), replacing `out` only if `overwrite`.

    An existing `out` is renamed aside first and deleted after the swap (put back if the
    swap fails), so `out` is always either the old or the new whole folder.
    """
    if not (out.exists() or out.is_symlink()):
        os.rename(tmp, out)
        return
    if not overwrite:  # appeared while we were writing
        raise OutputExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    aside = out.with_name(f"{out.name}.old-{secrets.token_hex(4)}")
    os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(aside, out)  # put the old copy back rather than leave neither
        raise
    if aside.is_symlink() or aside.is_file():  # out named a link or a file: remove it, not its target
        aside.unlink()
    else:
        shutil.rmtree(aside, ignore_errors=True)
