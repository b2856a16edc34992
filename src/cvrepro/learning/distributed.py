"""Several processes, on one machine or several, through PyTorch's own elastic launcher.

`cvrepro train` with `train.devices * train.num_nodes > 1`, when it is not itself a worker,
re-runs as `python -m torch.distributed.run ... -m cvrepro.cli train`: torchrun starts one worker
per device, does the rendezvous and watches them (one that dies stops the group, and torchrun
names its rank and exit code). Workers average gradients with DistributedDataParallel. Only
rank 0 writes outputs. The sharding of each epoch is `engine.rank_batches`.

Several machines: `dvc repro` runs on the head node (node rank 0, whose workspace gets the
outputs) with `CVREPRO_RDZV_ENDPOINT=head:port`; every other node runs torchrun with its own
`--node-rank` and that address (README, "GPUs, precision and several machines").
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from cvrepro.core.fileio import CvreproError

if TYPE_CHECKING:
    from cvrepro.config.schema import Train


def world() -> tuple[int, int, int]:
    """(rank, local rank, world size) of this process: torchrun's environment, or a single process."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def requested(train: Train) -> tuple[int, int]:
    """(devices per node, nodes) of the typed `train` section (the schema checked both: integers >= 1)."""
    return train.devices, train.num_nodes


def needs_launch(train: Train) -> bool:
    """More than one process is asked for and this process is not one of torchrun's workers."""
    devices, nodes = requested(train)
    return devices * nodes > 1 and "TORCHELASTIC_RUN_ID" not in os.environ and "WORLD_SIZE" not in os.environ


def launch_command(train: Train, stage: str = "train") -> list[str]:
    devices, nodes = requested(train)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={devices}", f"--nnodes={nodes}",
           "--max-restarts=0"]
    if nodes == 1:
        cmd.append("--standalone")  # a local rendezvous on a free port
    else:
        endpoint = os.environ.get("CVREPRO_RDZV_ENDPOINT", "")
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise CvreproError(f"params.yaml: train.num_nodes is {nodes}: set CVREPRO_RDZV_ENDPOINT=host:port "
                               f"(this node's address and a free port every node can reach), got {endpoint!r}")
        # Static rendezvous with this node as node 0: global rank 0, which writes the outputs, runs here,
        # in the workspace where `dvc repro` runs (c10d would rank the nodes by arrival).
        cmd += ["--node-rank=0", f"--master-addr={host}", f"--master-port={port}"]
    return cmd + ["-m", "cvrepro.cli", stage]


def launch(train: Train) -> None:
    """Run the workers through torchrun and wait; a failed worker is a CvreproError."""
    cmd = launch_command(train)
    print("launching: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    res = subprocess.run(cmd)
    if res.returncode != 0:
        raise CvreproError(f"train: a worker of the {train.devices}x{train.num_nodes}-process run "
                           f"failed (torchrun exit {res.returncode}; its report above names the rank and error); "
                           "no outputs were written")


def init(device) -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=(
            device if device.type == "cuda" else None))


def wrap(model, device):
    """DistributedDataParallel: PyTorch averages the gradients across ranks."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model) -> None:
    """Rank 0's buffers on every rank."""
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def broadcast(obj, rank: int):
    """rank 0's `obj` on every rank (pickled through the process group)."""
    import torch.distributed as dist

    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def agree_on_weights(model, weights_of, rank: int, world: int) -> tuple[bytes, list[str]] | None:
    """(weights, every rank's sha256 of them) once all ranks agree; None on ranks other than 0, which
    write nothing. weights_of(model) -> bytes serialises the weights. Ends the process group."""
    if world > 1:
        # DDP keeps rank 0's buffers (BatchNorm statistics), sending them at each forward; after the
        # last step each rank holds the statistics of its own shard, so take rank 0's once more.
        sync_buffers(model)
    weights = weights_of(model)
    rank_hashes = [hashlib.sha256(weights).hexdigest()]
    if world == 1:
        return weights, rank_hashes
    rank_hashes = gather(rank_hashes[0])
    finish()
    if rank != 0:
        return None
    if len(set(rank_hashes)) != 1:
        raise CvreproError(f"train: the ranks ended with different weights ({rank_hashes}); no outputs written")
    return weights, rank_hashes


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
