"""Torch's intra-op thread count, narrowed to one for a block of work.

Small per-step torch work (the VAD's LSTM) split over two OpenMP threads ends every
step at a barrier; on a 2-core machine where any other process holds a core, each
barrier waits for a scheduler slice: a 60 s VAD block took 2.3-15 s on two threads and
0.1 s on one. (The DSP separator is left on torch's default: on an idle 2-core machine
one thread made it 1.7x slower, 1.93 s vs 1.11 s for 2 min, though two threads can
thrash when another process holds a core.) torch is imported lazily.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()
_state = {"depth": 0, "saved": 0}  # nesting across threads: the first in saves, the last out restores


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, then restore the previous count.

    The count is process-wide, so overlapping uses (titles processed in threads) share
    one save and one restore.
    """
    import torch

    with _LOCK:
        if _state["depth"] == 0:
            _state["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                torch.set_num_threads(_state["saved"])
