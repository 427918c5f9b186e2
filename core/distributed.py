"""Several processes through ignite.distributed: how to launch, and the few rank-aware helpers a run needs.

Two launchers, one code path: `torchrun --standalone --nproc_per_node=N run.py ...` starts the processes
itself (idist reads RANK/WORLD_SIZE/... from the environment), `python run.py --nproc-per-node N` lets
`idist.Parallel` spawn them. Either way every process runs the same run function; rank 0 alone prints
and writes files.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import ignite.distributed as idist
import torch
from torch import nn

from core.errors import UserError

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def started_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARS)


def is_main_process() -> bool:
    """True on rank 0, the one process that prints and writes files (and on a non-distributed run)."""
    return idist.get_rank() == 0


@dataclass
class LaunchPlan:
    backend: str | None            # None: one plain process; else "nccl" (CUDA) or "gloo" (CPU)
    nproc_per_node: int | None     # None: nothing to spawn (one process, or torchrun already started them)
    master_port: int | None = None


def plan_launch(device: torch.device, nproc_per_node: int | None, batch_size: int) -> LaunchPlan:
    """Choose the backend and whether to spawn, from how this process was started; UserError on a clash."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if started_by_torchrun():
        if nproc_per_node is not None:
            raise UserError(f"--nproc-per-node {nproc_per_node}: this process was started by torchrun "
                            f"(WORLD_SIZE={os.environ['WORLD_SIZE']}): drop --nproc-per-node and give the "
                            f"count to torchrun's --nproc_per_node")
        check_batch_split(batch_size, int(os.environ["WORLD_SIZE"]))
        return LaunchPlan(backend, None)
    if nproc_per_node is None:
        return LaunchPlan(None, None)
    if backend == "nccl" and nproc_per_node > torch.cuda.device_count():
        raise UserError(f"--nproc-per-node {nproc_per_node}: only {torch.cuda.device_count()} CUDA GPU(s) here: "
                        f"give at most {torch.cuda.device_count()} (one process per GPU), or --device cpu")
    check_batch_split(batch_size, nproc_per_node)
    # ignite's default port (2222) would collide between two runs on one machine; MASTER_PORT still wins.
    port = None if "MASTER_PORT" in os.environ else free_port()
    return LaunchPlan(backend, nproc_per_node, port)


def check_batch_split(batch_size: int, world_size: int) -> None:
    """--batch-size is the global batch, split evenly: each rank loads batch_size // world_size."""
    if world_size > 1 and batch_size % world_size:
        raise UserError(f"--batch-size {batch_size} does not split evenly over {world_size} processes: it is the "
                        f"global batch, each process loads 1/{world_size} of it: give a multiple of {world_size}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP (or DataParallel) wrapper: what checkpoints and exports should save."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def broadcast_floats(values: list[float] | None, count: int) -> list[float]:
    """Rank 0's `count` floats on every rank (other ranks pass None); a no-op without distribution."""
    if idist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=idist.device()) if is_main_process() else None
    tensor = idist.broadcast(tensor, src=0, safe_mode=True)
    assert tensor.numel() == count
    return [float(v) for v in tensor.cpu()]


def broadcast_buffers_from_rank0(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP syncs buffers only at the start of a training forward; after the last step each rank's
    running statistics include its own last batch. Evaluating each shard with rank 0's buffers makes
    the distributed test metrics those of the one model rank 0 saves.
    """
    if idist.get_world_size() == 1:
        return
    for buffer in module.buffers():
        buffer.copy_(idist.broadcast(buffer, src=0))


def leave_spawned_process(code: int = 0) -> None:
    """[dist] End a process that idist.Parallel spawned, at once: flush the logs and the output, then
    os._exit. The interpreter's own teardown destroys gloo's process group and its threads while the other
    processes are leaving too, and that can abort (SIGABRT, seen in CI after successful runs and after user
    errors alike); the launcher then reports a crash instead of `code`. Call it after the final barrier, with
    every file closed: nothing after this runs."""
    import logging
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
