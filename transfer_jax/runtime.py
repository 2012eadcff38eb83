"""Process-level setup shared by the scripts: compilation cache, malloc, multi-host start."""
from __future__ import annotations

import ctypes
import os
import pathlib
import platform

import jax


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Turns on JAX's persistent compilation cache so repeated runs skip compiling.

    Location: `path`, else $TRANSFER_JAX_CACHE, else ~/.cache/transfer_jax/jax.
    """
    path = pathlib.Path(path or os.environ.get("TRANSFER_JAX_CACHE")
                        or pathlib.Path.home() / ".cache" / "transfer_jax" / "jax")
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # programs with a `custom_partitioning` call (cpu_kernels' batch-parallel kernels)
    # carry a per-process pointer that would make every run a cache miss; the partition
    # callbacks are pure functions of the program, so the key may leave it out
    jax.config.update("jax_remove_custom_partitioning_ptr_from_cache_key", True)
    return path


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
    """Multi-host: connects the processes before any device is touched (no-op if unset).

    Each host then feeds its own slice of every global batch (see train.shard_batch).
    """
    if coordinator_address:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_device_count(cores: int, divides: int | None = None) -> int:
    """The most devices, up to `cores`, whose count divides `divides` (any if None)."""
    return max(d for d in range(1, cores + 1) if not divides or divides % d == 0)


def use_cpu_cores(n: int | None = None, divides: int | None = None) -> bool:
    """One JAX CPU device per core, each running its ops on one thread, so per-example work
    (extraction, `inference.map_examples`) and data-parallel training split the batch over
    the cores instead of sharing each small op between them (extraction 1.2-1.3x,
    training 1.1-1.3x on 2 cores; docs/benchmarks.md).

    n: the device count (default: the available cores, or with `divides` the largest
    count up to them that divides it, e.g. a global batch size; the ops of fewer devices
    than cores keep their threads). Process-wide, and only before JAX's backends start:
    call it first thing in a script, never in a library. It starts nothing itself, so
    `maybe_initialize_distributed` may follow. Returns False, changing nothing, when JAX
    has already started (e.g. a script's main() called from a test); a count already in
    XLA_FLAGS (`--xla_force_host_platform_device_count`) wins, and the flags stay as given.
    """
    from jax._src import xla_bridge  # no public way to ask whether JAX has started

    if xla_bridge.backends_are_initialized():
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return True
    cores = available_cores()
    n = cpu_device_count(cores, divides) if n is None else n
    jax.config.update("jax_num_cpu_devices", n)
    if 1 < n and cores <= n and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    return True


_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def tune_malloc() -> bool:
    """glibc: keep freed memory for reuse (no mmap for big blocks, no trimming, one arena).

    XLA on CPU allocates its large per-call buffers afresh; with glibc's defaults each one
    is mmapped and page-faulted in again (measured: ~0.3 s per 535 MB buffer on a 2-core
    VM), which costs up to 40 % of extraction time. Trimming is off entirely: with a 1 GB
    threshold a paper-size train step still gave its 3.2 GB back and faulted it in again
    (800k page faults, 1.6-2.3 s a step instead of 0.8-1.0 s). With this the peak RSS
    stays at its high-water mark instead. Process-wide; call it early in a script, never
    in a library. Returns whether it was applied (False off glibc).
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(k, v) == 1 for k, v in
                   ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))  # -1: never trim
    except (OSError, AttributeError):
        return False
