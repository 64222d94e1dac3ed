"""Load or build: the one mechanism behind every result latentdd keeps by content.

An entry's path is named by the `cachekey.content_key` of what makes it, under the cache folder:
the fitted VAE and prior `<cache>/<key16>/`, the consistency judge `<cache>/<key16>/`, the fitted
teacher `<cache>/teacher/<key16>/`, the network bank and the forgetting counts
`<cache>/<stage>/<key24>.safetensors` (one `latentdd.checkpoint` state file, its checksum beside).

`cached(path, build, load=..., save=...)` hands back the entry at `path` when one is there and
usable; otherwise it builds it and stores it, atomically (`save_state`, `write_folder`, or files
written one by one with the record last, its presence marking a finished entry). An entry that is
there but unusable is ignored with a warning that names it, says why and what happens instead
(`latentdd.checkpoint.ignore`), and is built again; an error other than StateRejected (a fitted VAE
whose files do not load, say) propagates as it is, for the caller to say what to do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from latentdd.checkpoint import StateRejected, ignore, restore, save_state

T = TypeVar("T")
B = TypeVar("B")


def cached(path: Path | None, build: Callable[[], B], *, load: Callable[[Path], T | None],
           save: Callable[[Path, B], T], otherwise: str) -> tuple[T, bool]:
    """(the entry at `path`, True) when it is there and usable, else (what was built and stored, False).

    load(path): the entry; None when there is none (or `restore` already warned that it cannot be used);
        StateRejected("why") when it cannot be used, which is warned about ("ignoring <path>: why; otherwise").
    build(): the slow part (a fit, a training), called only when no entry is used.
    save(path, built): stores what build() made, atomically, and returns what to hand back (`built` itself,
        or the entry as it loads from `path`).
    path None: nothing is cached; build()'s value is handed back as it is.
    """
    if path is None:
        return build(), False
    try:
        entry = load(path)
    except StateRejected as why:
        ignore(path, str(why), otherwise)
        entry = None
    if entry is not None:
        return entry, True
    return save(path, build()), False


def cached_state(path: Path | None, build: Callable[[], T], *, state: Callable[[T], dict],
                 load: Callable[[dict], T], otherwise: str) -> tuple[T, bool]:
    """`cached` for an entry that is one `latentdd.checkpoint` state file: state(value) is what it stores,
    load(state) builds the value back (StateRejected when the state does not fit)."""

    def store(path: Path, value: T) -> T:
        save_state(path, state(value))
        return value

    return cached(path, build, load=lambda path: restore(path, load, otherwise=otherwise), save=store,
                  otherwise=otherwise)


def write_folder(final: Path, write: Callable[[Path], None], marker: str) -> None:
    """write(tmp) into a fresh temporary folder beside `final`, then rename it to `final`, so that a crash
    never leaves half an entry. A concurrent writer that finished first (its `marker` file in place) wins."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / marker).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
