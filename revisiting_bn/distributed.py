"""Data-parallel training of one run under torchrun (DistributedDataParallel).

    torchrun --nproc_per_node=4 train.py --batch_size 128 ...

``--batch_size`` stays the global batch: each of the N processes trains on a
disjoint 1/N of every batch of the one seeded order, so the optimisation (lr,
steps per epoch, effective batch) is the single-GPU protocol's. BN statistics
are per process by default (a BN batch of batch_size / N); ``--sync_bn``
(CUDA only) computes them over the whole batch, as one GPU would. Evaluation is
sharded without overlap and summed, so accuracies are exact; only rank 0
writes files or prints.
"""
import os

import torch
import torch.distributed as dist

__all__ = ['Distributed', 'setup']


class Distributed:
    """This process's place in the job; a single process is rank 0 of 1 and every collective is a no-op."""

    def __init__(self, rank=0, world_size=1, local_rank=0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def shard(self, index):
        """This process's part of a batch (or an evaluation set) given as an index tensor."""
        return index.tensor_split(self.world_size)[self.rank] if self.enabled else index

    def sum(self, tensor):
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag, device):
        """True on every process if it is true on any."""
        if not self.enabled:
            return bool(flag)
        value = torch.tensor([1 if flag else 0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def min(self, value, device):
        if not self.enabled:
            return value
        tensor = torch.tensor([value], device=device, dtype=torch.long)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return int(tensor.item())

    def broadcast_buffers(self, module):
        """Give every process rank 0's BN running statistics (what rank 0 saves and evaluates)."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def wrap(self, network, device):
        if not self.enabled:
            return network
        import warnings
        from torch.nn.parallel import DistributedDataParallel
        # Buffers are broadcast once before evaluation instead of before every forward. Newer torch
        # versions call broadcast_buffers deprecated; its replacement does not exist in torch 2.4.
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)
            return DistributedDataParallel(network, device_ids=[device.index] if device.type == 'cuda' else None,
                                           broadcast_buffers=False)

    def close(self, together=True):
        """Leave the job. ``together`` (every process got here the normal way): meet at a barrier first, because
        gloo's teardown can hang in a process whose peer has already exited (seen with torch 2.4: one run in
        five, two processes on two cores). A process leaving on an error does not wait for the others."""
        if self.enabled and dist.is_initialized():
            if together:
                dist.barrier()
            dist.destroy_process_group()


def setup(device_name):
    """Join the torchrun job described by the environment, if any; returns (Distributed, device name)."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return Distributed(), device_name
    rank, local_rank = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', '0'))
    on_cuda = torch.device(device_name).type == 'cuda'
    if on_cuda:
        device_name = f'cuda:{local_rank}'
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if on_cuda else 'gloo')
    return Distributed(rank, world_size, local_rank), device_name
