"""The few collective steps a batch run over several ranks needs (torch.distributed).

The process group itself is started by the command line (``medseg batch`` under ``torchrun``) or by
the caller; a batch run only checks that it matches, gathers each rank's figures and makes every
rank stop when one of them could not start. With one rank every step is a plain call.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["Ranks"]


class Ranks:
    """This process's place in the run, and the collective steps between ranks.

    Args:
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: number of ranks sharing the run; above 1, torch.distributed must be initialised
            with the same rank and world size.

    Raises:
        TypeError: ``rank`` or ``world_size`` not an int.
        ValueError: out of range, or not matching the initialised process group.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        for name, value in (("rank", rank), ("world_size", world_size)):
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank {rank} of world_size {world_size}: expected world_size >= 1 and 0 <= rank < world_size"
            )
        self.rank = operator.index(rank)
        self.world_size = operator.index(world_size)
        if self.world_size > 1:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError(
                    f"world_size {world_size}: a run over several ranks needs torch.distributed initialised "
                    "(run under torchrun through `medseg batch`, or call init_process_group first)"
                )
            if dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
                raise ValueError(
                    f"rank {rank} of {world_size} given, but the process group is rank "
                    f"{dist.get_rank()} of {dist.get_world_size()}"
                )

    def owns(self, index: int) -> bool:
        """Whether case number ``index`` (in case-id order) is this rank's: ``index % world_size == rank``."""
        return index % self.world_size == self.rank

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank (also a barrier)."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def agree(self, error: BaseException | None) -> None:
        """Raise on every rank when any rank failed to start, so that none waits for the others.

        Raises:
            BaseException: this rank's own ``error``, when it has one.
            ValueError: another rank's error, naming that rank.
        """
        messages = self.gather(None if error is None else str(error))
        if error is not None:
            raise error
        for rank, message in enumerate(messages):
            if message is not None:
                raise ValueError(f"rank {rank} could not start: {message}")
