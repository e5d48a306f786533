"""Ranks, shards and atomic shard files for evaluation on several processes or machines
(docs/metrics.md#evaluation-at-scale).

Work is cut into *shards* that do not depend on the number of processes: shard ``i`` holds the
items ``[i * S, (i + 1) * S)`` (grids or images) with ``S`` a multiple of the attribution batch,
so every batch is exactly the batch a single process would attribute (bit-identical results,
whatever the number of ranks). Rank ``r`` of ``W`` computes the shards ``i`` with ``i % W == r``
whose file is missing, writes each one atomically (temporary file + :func:`os.replace`) and rank 0
merges them in order after a barrier. A run killed at any point leaves only whole shard files
behind, so running it again (with any number of ranks) recomputes the missing shards only.

Where the ranks come from (:func:`detect_ranks`): ``torchrun`` / ``torch.distributed.run``
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; also what SLURM jobs launched through torchrun see),
SLURM's own variables (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, as Lightning's
environment detection reads them) for ``srun alignnet evaluate ...``, else a single process.
The barrier is a ``torch.distributed`` gloo process group, on the CPU and on CUDA alike (ranks may share a GPU).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

__all__ = [
    "check_slurm_launch",
    "RankInfo",
    "atomic_save_npz",
    "barrier",
    "detect_ranks",
    "init_process_group",
    "shard_device",
    "shard_ranges",
    "shards_of_rank",
    "shutdown",
]

#: how long a rank may wait at a barrier for the slowest rank (long perturbation shards)
BARRIER_TIMEOUT = datetime.timedelta(hours=48)


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "single"  # single | torchrun | slurm | processes

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise InputError(f"need 0 <= rank < world_size, got rank {self.rank} of {self.world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect_ranks(env: Mapping[str, str] | None = None) -> RankInfo:
    """The ranks of this run from the environment (module docstring); a single process if none is set.

    torchrun's variables win over SLURM's (a SLURM job that runs torchrun sees both, and torchrun's
    are the ones of this process). SLURM's are used only for jobs of more than one task.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        return RankInfo(rank, world, int(env.get("LOCAL_RANK", 0)), "torchrun" if world > 1 else "single")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        check_slurm_launch(env)  # ranks that sbatch announced but nobody started would be waited for
        return RankInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)), "slurm")
    return RankInfo()


def check_slurm_launch(env: Mapping[str, str] | None = None) -> None:
    """Fail at start-up when SLURM announces ranks that were never started.

    Lightning (training) and :func:`detect_ranks` (evaluation) take a process that sees ``SLURM_NTASKS`` (outside ``torchrun`` and interactive jobs) for
    rank ``SLURM_PROCID`` of ``SLURM_NTASKS``. An sbatch script with several tasks that runs ``alignnet
    train`` or ``alignnet evaluate`` without ``srun`` starts one process, which would then wait for the other ranks until the process
    group times out. ``srun`` sets ``SLURM_STEP_NUM_TASKS`` (and ``SLURM_NTASKS``) to the number of tasks it
    started, so the two differ exactly when ranks are missing.
    """
    env = os.environ if env is None else env
    tasks = env.get("SLURM_NTASKS")
    if "TORCHELASTIC_RUN_ID" in env or tasks is None or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return  # torchrun's ranks, or not a SLURM launch for Lightning
    started = env.get("SLURM_STEP_NUM_TASKS")
    if int(tasks) > 1 and started != tasks:
        n_started = 1 if started is None else int(started)
        how = "this process was not started by srun" if started is None else f"srun started {started} of them"
        raise InputError(
            f"this SLURM job has {tasks} tasks (SLURM_NTASKS) but {how}: this process would be rank "
            f"{env.get('SLURM_PROCID', '0')} of {tasks} and wait for the other {int(tasks) - n_started}, which never "
            "start. In the sbatch script start the command with srun (srun alignnet train|evaluate ..., with "
            "--ntasks-per-node equal to --devices; docs/training.md), or ask SLURM for a single task"
        )


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``"gpu[003-005,9],cpu1"`` -> ``"gpu003"``."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise InputError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR")
    prefix, ranges = m.group(1), m.group(2)
    return prefix if not ranges else prefix + ranges.split(",")[0].split("-")[0]


def shard_device(device: str | torch.device, info: RankInfo) -> torch.device:
    """``device`` for this rank: a plain ``"cuda"`` becomes ``cuda:<local_rank>`` when there are several ranks."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None and info.world_size > 1:
        return torch.device("cuda", info.local_rank % max(1, torch.cuda.device_count()))
    return d


def init_process_group(info: RankInfo, device: torch.device, init_method: str | None = None) -> bool:
    """Join the ``torch.distributed`` (gloo) group of the run; False for one process.

    ``init_method`` defaults to ``env://`` (torchrun's ``MASTER_ADDR``/``MASTER_PORT``); under SLURM
    without them the first node of ``SLURM_NODELIST`` and a port derived from ``SLURM_JOB_ID`` are used.
    """
    import torch.distributed as dist

    if info.world_size == 1:
        return False
    if dist.is_available() and dist.is_initialized():
        return True
    if init_method is None and info.launcher == "slurm":
        os.environ.setdefault("MASTER_ADDR", _first_slurm_host(os.environ.get("SLURM_NODELIST", "127.0.0.1")))
        os.environ.setdefault("MASTER_PORT", str(15000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # gloo even on CUDA: the group only provides barriers (results go through files), and NCCL refuses two ranks
    # on one GPU ("--processes 2 --device cuda" on a one-GPU machine), which gloo does not care about
    dist.init_process_group(
        "gloo",
        init_method=init_method or "env://",
        rank=info.rank,
        world_size=info.world_size,
        timeout=BARRIER_TIMEOUT,
    )
    return True


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if any."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_ranges(n_items: int, unit: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` shards of ``n_items`` items, each ``shard_size`` rounded up to a multiple
    of ``unit`` (the attribution batch) so that shard boundaries are batch boundaries."""
    if n_items < 0 or unit < 1 or shard_size < 1:
        raise InputError(f"need n_items >= 0, unit >= 1, shard_size >= 1; got {n_items}, {unit}, {shard_size}")
    size = -(-int(shard_size) // int(unit)) * int(unit)
    return [(s, min(s + size, n_items)) for s in range(0, n_items, size)]


def shards_of_rank(n_shards: int, info: RankInfo) -> list[int]:
    """Shard indices of this rank: round robin, ``i % world_size == rank``."""
    return list(range(info.rank, n_shards, info.world_size))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write ``path`` (an ``.npz``) so that it either exists whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
    return path
