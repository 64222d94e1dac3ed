"""Progress of a stage: a tqdm bar on a terminal, plain lines in a log.

tqdm redraws its bars with carriage returns and cursor moves (ESC [A for nested bars),
which land in a log file as control sequences. Where the stream is not a terminal,
`progress_bar` prints plain lines instead: one when the stage starts, at most one per
tenth of it (with the time left at the rate so far, ETA), and one when it ends, with counts,
seconds and the latest postfix.
Nested inner bars (leave=False: an evaluation's epochs) print their end line only, unless
they run for over a minute (a 1000-epoch training of 500 images: half an hour on a core);
then they print their tenths from there on too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

INNER_QUIET_SECONDS = 60.0  # a nested bar prints its tenths only once it has run this long


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0, desc: str = "",
                 unit: str = "it", disable: bool = False, leave: bool = True, file=None):
    """A tqdm bar when `file` (default stderr) is a terminal, else a `PlainProgress`; same calls either way
    (iterate, update, set_postfix, close)."""
    file = sys.stderr if file is None else file
    if disable or _is_terminal(file):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable, leave=leave,
                    file=file)
    return PlainProgress(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=file)


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """The subset of tqdm that latentdd uses, writing whole lines (no \\r, no escape sequences)."""

    def __init__(self, iterable: Iterable | None, *, total: int | None, initial: int, desc: str, unit: str,
                 leave: bool, file):
        self.iterable, self.desc, self.unit, self.leave, self.file = iterable, desc, unit, leave, file
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n, self.postfix, self.closed = initial, "", False
        self.start, self.start_n = time.perf_counter(), initial
        self.tenth = self._tenth()
        if leave:
            self._line("start" if initial == 0 else "resume")

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        long = self.leave or time.perf_counter() - self.start >= INNER_QUIET_SECONDS
        if long and self._tenth() > self.tenth and self.n < (self.total or 0):
            self.tenth = self._tenth()
            self._line(f"{100 * self.n // self.total}%")

    def set_postfix(self, ordered_dict: dict | None = None, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line("done")

    def _tenth(self) -> int:
        return 10 * self.n // self.total if self.total else 0

    def _line(self, what: str) -> None:
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        text = f"{self.desc}: {what} {count} {self.unit}"
        if what not in ("start", "resume"):
            seconds = time.perf_counter() - self.start
            rate = (self.n - self.start_n) / max(seconds, 1e-9)
            text += f" in {seconds:.1f} s, {rate:.3g} {self.unit}/s"
            if what != "done" and self.total and rate > 0:  # the time left at the rate so far, as tqdm's
                text += f", ETA {(self.total - self.n) / rate:.0f} s"
        print(text + (f", {self.postfix}" if self.postfix else ""), file=self.file, flush=True)
