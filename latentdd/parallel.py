"""The processes a command runs in: one, or those `accelerate launch` (or torchrun) started.

Without a GPU, the processes of `accelerate launch --multi_gpu --num_processes N` (or of
`torchrun --nproc_per_node N`) join a gloo group on the CPU. Plain `accelerate launch
--num_processes N` on such a machine (with or without --cpu) starts ONE process that does
all the work -- accelerate says nothing -- so `process_state` warns when it sees that launch.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

log = logging.getLogger(__name__)

SINGLE_PROCESS_LAUNCH = (
    "accelerate launch was asked for several processes but started one: on a machine without GPUs "
    "pass --multi_gpu too (accelerate launch --multi_gpu --num_processes N ...; the processes then share "
    "the work on the CPU), or use torchrun --nproc_per_node N -m latentdd ...; this process does all the work"
)


def launched_as_one_of_several() -> bool:
    """Whether accelerate's single-process launcher ran us for --num_processes > 1: it sets the
    rendezvous address (MASTER_PORT) of a group it then never starts (no WORLD_SIZE)."""
    return "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ and "ACCELERATE_USE_CPU" in os.environ


def free_port() -> int:
    """A TCP port free on this machine now: a rendezvous port for `accelerate launch --main_process_port`."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_args(processes: int) -> list[str]:
    """The python arguments that start `processes` CPU or GPU processes by `accelerate launch` (none for one):
    `[sys.executable, *launch_args(n), "-m", "latentdd", ...]` or a script path in place of `-m latentdd`."""
    if processes == 1:
        return []
    # --multi_gpu: without it accelerate starts one process on a CPU machine
    return ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines",
            "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]


# How long a process waits at a barrier for the others: the first process may distil for hours (a matching
# method's whole set) while the others wait for its folders; a process that fails ends the launch instead.
BARRIER_TIMEOUT = timedelta(hours=24)


def process_state():
    """accelerate's PartialState for this process (gloo on the CPU when there is no GPU; barriers wait up to
    BARRIER_TIMEOUT)."""
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
    if state.num_processes == 1 and launched_as_one_of_several():
        log.warning(SINGLE_PROCESS_LAUNCH)
    return state


class DataParallel:
    """The processes that share one training (torch.distributed's default group: `accelerate launch`,
    torchrun), or this process alone. Every process draws the same global batch from the same generator
    (order, augmentation, CutMix); each trains on its `shard` of it, and `sum_` adds their gradients (and
    losses) so that every process steps with the gradient of the whole batch: the training is the one-process
    training up to the order of floating-point sums."""

    def __init__(self, rank: int = 0, size: int = 1) -> None:
        self.rank, self.size = rank, size

    @classmethod
    def current(cls) -> "DataParallel":
        """The default process group when one is initialised, else one process."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's contiguous part of n items: parts differ by at most one, the first n % size get one more."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum_(self, tensors: list) -> None:
        """Sum each tensor over the processes, in place: one all-reduce of their flat concatenation."""
        import torch
        import torch.distributed as dist

        if self.size == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, size={self.size})"
