"""torch.compile with a fall back to eager, as the evaluator's training and the matching engine's embedding run it.

A compile mode is "off" (eager), "on" (compiled; a compiler failure raises) or "auto" (compiled;
on a compiler failure, warn and run eagerly from then on). `CompileStatus` records how the calls
ran, for the records that must say so; `CompiledModel` runs one model's calls that way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

COMPILE_MODES = ("auto", "on", "off")


@dataclass
class CompileStatus:
    """How the steps of an evaluation (or the embedding calls of a matching run) ran: through torch.compile or
    eagerly (shared by its models).

    `compiled` holds while every step so far ran compiled; `fallback` is the reason of the
    first fall back to eager (mode auto), after which the later models of the evaluation
    run eagerly too, so that its runs do not mix compiled and eager training.
    """

    mode: str  # EvalConfig.compile, MatchingDistiller.compile: auto | on | off
    compiled: bool = field(init=False)  # mode != off, until a fall back
    fallback: str | None = None

    def __post_init__(self) -> None:
        self.compiled = self.mode != "off"

    def record(self) -> dict:
        """The protocol record's fields: compiled and eager training give different accuracies."""
        return {"compile": self.mode, "compiled": self.compiled, "compile_fallback": self.fallback}

    def fall_back(self, where: str, err: Exception) -> None:
        """A compiled call at `where` (e.g. "train call 2") failed with `err`: re-raise it in mode on;
        in mode auto, warn, and record that the rest runs eagerly (the first reason is kept)."""
        if self.mode == "on":
            raise err
        first_line = (str(err).splitlines() or [type(err).__name__])[0][:200]
        reason = f"{where}: {first_line}"
        log.warning("torch.compile failed (%s); running eagerly", reason)
        self.compiled = False
        self.fallback = self.fallback or reason


class CompiledModel:
    """One model's calls through torch.compile when asked and able: `forward` is the compiled
    model, or the model itself (mode off, or `status` already fell back).

    Compiled graphs are cached per shape and reused by later models of the same
    architecture, so only the first evaluation of a process pays for compilation.
    """

    def __init__(self, model: torch.nn.Module, mode: str, status: CompileStatus | None = None) -> None:
        self.model = model
        self.status = status or CompileStatus(mode)
        eager = mode == "off" or self.status.fallback is not None
        self.forward = model if eager else torch.compile(model, dynamic=False)
        self.calls: dict[str, int] = {}  # calls so far, by phase

    def guarded(self, phase: str, fn):
        """Run fn(), which calls `forward`; in mode auto, fall back to eager if compilation fails, on any
        call: a new shape (the smaller last batch, the test batches) compiles again on its first call."""
        self.calls[phase] = self.calls.get(phase, 0) + 1
        if self.forward is self.model:
            return fn()
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - any compiler failure
            self.status.fall_back(f"{phase} call {self.calls[phase]}", err)
            self.forward = self.model
            return fn()  # whole again: a training step's fn zeroes the gradients first, so a half-done step is redone
