"""The processes a command runs in: one, or those `accelerate launch` (or torchrun) started.

Without a GPU, the processes of `accelerate launch --multi_gpu --num_processes N` (or of
`torchrun --nproc_per_node N`) join a gloo group on the CPU. Plain `accelerate launch
--num_processes N` on such a machine (with or without --cpu) starts ONE process that does
all the work -- accelerate says nothing -- so `process_state` warns when it sees that launch.
"""

from __future__ import annotations

import logging
import os

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


def process_state():
    """accelerate's PartialState for this process (gloo on the CPU when there is no GPU)."""
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes == 1 and launched_as_one_of_several():
        log.warning(SINGLE_PROCESS_LAUNCH)
    return state
