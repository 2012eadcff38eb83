"""Process-level setup shared by the scripts: compilation cache and multi-host start."""
from __future__ import annotations

import os
import pathlib

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
    return path


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
    """Multi-host: connects the processes before any device is touched (no-op if unset).

    Each host then feeds its own slice of every global batch (see train.shard_batch).
    """
    if coordinator_address:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
