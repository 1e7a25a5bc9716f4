"""CPU thread settings, made once per process where a command starts its work."""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_limits


def set_cpu_threads(torch_threads: int) -> None:
    """Give torch `torch_threads` intra-op threads and every BLAS library loaded so far one thread.

    NumPy's BLAS computes the NumPy networks (`rlagents.numpy_mlp`); products this small gain nothing from
    more threads, and BLAS worker threads competing with torch's spinning OpenMP threads made DQN updates ~25×
    slower (RL Zoo's CartPole settings at torch_threads=2: 146 instead of 3,500 env steps/s). Limits apply to
    the libraries loaded when this is called, so call it after imports, before the work starts.
    """
    torch.set_num_threads(torch_threads)
    threadpool_limits(1, user_api="blas")
