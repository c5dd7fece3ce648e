"""Several children on one GPU: each child process gets its share of the GPU's memory, or a clear error.

k children sharing a GPU as processes would run each other out of memory if one of them grew without a
bound, so each is capped with ``torch.cuda.set_per_process_memory_fraction`` at its share of the memory
that was free when it started. When that share is under what a child needs, the search stops before any
child trains, with one line naming the numbers and the largest k that fits.
"""

from __future__ import annotations

from nas_env.errors import DeviceError

#: the least GPU memory (GiB) one child is given; a share below it is a setup error
MIN_CHILD_GPU_MEMORY_GIB = 1.0

_GIB = 1024**3


def child_memory_fraction(children: int, free_bytes: int, total_bytes: int, device: str = "cuda:0") -> float:
    """The fraction of ``total_bytes`` each of ``children`` processes may use: an equal part of the free
    memory. Raises :class:`DeviceError` (one line) when that part is under :data:`MIN_CHILD_GPU_MEMORY_GIB`."""
    if children < 1:
        raise ValueError(f"children must be >= 1, got {children}")
    share = free_bytes / children
    if share < MIN_CHILD_GPU_MEMORY_GIB * _GIB:
        fits = int(free_bytes // (MIN_CHILD_GPU_MEMORY_GIB * _GIB))
        raise DeviceError(
            f"--children-per-gpu {children}: {device} has {free_bytes / _GIB:.1f} GiB free of "
            f"{total_bytes / _GIB:.1f} GiB, {share / _GIB:.2f} GiB per child, under the "
            f"{MIN_CHILD_GPU_MEMORY_GIB:.1f} GiB a child needs; use --children-per-gpu {max(1, fits)} or fewer"
            + (" (or free the GPU)" if fits < 1 else "")
        )
    return min(1.0, share / total_bytes)


def limit_child_memory(children: int) -> float | None:
    """In a child process about to share its GPU with ``children - 1`` others: check the free memory and
    cap this process at its share (returns the fraction). None, doing nothing, without a CUDA device or when
    the GPU is not shared (one child)."""
    if children <= 1:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    fraction = child_memory_fraction(children, free, total, f"cuda:{index}")
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction
