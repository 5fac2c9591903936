#!/usr/bin/env python3
"""Real PyTorch distributed checkpoints (DCP), written by Debian's torch 1.13
(torch.distributed._shard.checkpoint.save_state_dict with FileSystemWriter) from 1, 2 or 4
ranks on CPU (gloo, torch.multiprocessing), for ckpt's DCP reader to be judged against.

    make_dcp.py OUTDIR [--ranks 1 2 4] [--big-mib N]

For each world size W it writes OUTDIR/train-W/ (a training checkpoint whose keys are flattened
the way torch 2.x's dcp.save flattens them: "model.<fqn>", "optim.state.<fqn>.<key>",
"optim.param_groups.0.lr", "epoch", with the flattening recorded in Metadata.planner_data as
2.x does) and OUTDIR/train-W.expected.pt: torch.save of {"tensors": {fqn: the whole tensor},
"values": {fqn: value}} as every rank knew them before saving. With W == 2 it also writes
OUTDIR/flat-2/ (a plain model state_dict, no planner_data, as 1.13 users wrote them) and its
.expected.pt. ShardedTensors (ChunkShardingSpec) are split across the ranks, by rows or by
columns; plain tensors are written once, by rank 0.

--big-mib N instead writes OUTDIR/big/ from 2 ranks: about N MiB of float32 ShardedTensors
(a few large ones), for the benchmark.

torch 1.13's checkpoint dataclasses do not import on Python 3.11 ("mutable default ... for field
tensor_properties"): for this generator only, dataclasses._get_field is wrapped so that such a
default becomes a default_factory.
"""
import argparse
import copy
import dataclasses
import os
import sys

_get_field = dataclasses._get_field


def _get_field_allowing_instance_defaults(cls, name, type_, *args):
    default = cls.__dict__.get(name, dataclasses.MISSING)
    if isinstance(default, dataclasses.Field):
        if default.default is not dataclasses.MISSING and default.default.__class__.__hash__ is None:
            value = default.default
            default.default = dataclasses.MISSING
            default.default_factory = lambda value=value: copy.deepcopy(value)
    elif default is not dataclasses.MISSING and default.__class__.__hash__ is None:
        setattr(cls, name, dataclasses.field(default_factory=lambda value=default: copy.deepcopy(value)))
    return _get_field(cls, name, type_, *args)


dataclasses._get_field = _get_field_allowing_instance_defaults

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.distributed._shard import sharded_tensor  # noqa: E402
from torch.distributed._shard.sharding_spec import ChunkShardingSpec  # noqa: E402
import torch.distributed._shard.checkpoint as dcp  # noqa: E402
from torch.distributed._shard.checkpoint.default_planner import DefaultSavePlanner  # noqa: E402


class FlatteningPlanner(DefaultSavePlanner):
    """Records in Metadata.planner_data, for each key, the path it had in the nested state
    (torch 2.x's DefaultSavePlanner(flatten_state_dict=True) does this)."""

    def __init__(self, paths):
        self.paths = paths

    def create_global_plan(self, all_plans):
        plans, metadata = super().create_global_plan(all_plans)
        return plans, dataclasses.replace(metadata, planner_data=dict(self.paths))


def full_values(seed):
    """The whole tensors and values, the same on every rank."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g).to(dtype)

    tensors = {
        # ShardedTensors: (tensor, dimension it is split along)
        "model.embed.weight": (randn(50, 12), 0),
        "model.fc.weight": (randn(24, 20, dtype=torch.float16), 1),
        "model.proj.weight": (randn(16, 8, dtype=torch.bfloat16), 0),
        "model.conv.weight": (randn(9, 3, 2, 2, dtype=torch.float64), 0),
        "optim.state.embed.weight.exp_avg": (randn(50, 12), 0),
        "optim.state.embed.weight.exp_avg_sq": (randn(50, 12).abs(), 0),
        # plain tensors, written by rank 0
        "model.fc.bias": (randn(24), None),
        "model.bn.weight": (randn(20), None),
        "model.bn.bias": (randn(20), None),
        "model.bn.running_mean": (randn(20), None),
        "model.bn.running_var": (randn(20).abs(), None),
        "model.bn.num_batches_tracked": (torch.tensor(7, dtype=torch.int64), None),
        "model.mask": (randn(7, 3) > 0, None),
        "model.codes": (torch.arange(-6, 6, dtype=torch.int8).reshape(3, 4), None),
        "model.phase": (torch.complex(randn(5), randn(5)), None),
        "model.empty": (torch.zeros(0, 4), None),
        "optim.state.fc.weight.step": (torch.tensor(11.0), None),
        "optim.state.fc.weight.exp_avg": (randn(24, 20, dtype=torch.float16), None),
    }
    # Saved as it lies: a transposed view, not contiguous (its storage is exactly its elements).
    tensors["model.head.weight"] = (randn(6, 10).t(), None)
    values = {
        "epoch": 3,
        "optim.param_groups.0.lr": 0.01,
        "optim.param_groups.0.betas": (0.9, 0.999),
        "optim.param_groups.0.params": ["embed.weight", "fc.weight"],
        "note": {"run": "dcp-fixture", "steps": [1, 2, 3]},
    }
    return tensors, values


def path_of(key):
    """The nested path 2.x's flattening would record for our keys."""
    if key.startswith("model."):
        return ("model", key[len("model."):])
    if key.startswith("optim.param_groups."):
        _, _, index, rest = key.split(".", 3)
        return ("optim", "param_groups", int(index), rest)
    if key.startswith("optim.state."):
        fqn, leaf = key[len("optim.state."):].rsplit(".", 1)
        return ("optim", "state", fqn, leaf)
    return (key,)


def sharded(full, dim, world, group):
    spec = ChunkShardingSpec(dim=dim, placements=[f"rank:{r}/cpu" for r in range(world)])
    st = sharded_tensor.empty(spec, *full.shape, dtype=full.dtype, process_group=group)
    for shard in st.local_shards():
        offsets, sizes = shard.metadata.shard_offsets, shard.metadata.shard_sizes
        shard.tensor.copy_(full[tuple(slice(o, o + s) for o, s in zip(offsets, sizes))])
    return st


def save(out, kind, world, group):
    """Every rank of `group` (`world` ranks) saves its part of checkpoint `kind`."""
    tensors, values = full_values(seed=world)
    if kind == "flat":
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        values = {"epoch": values["epoch"]}
    state = {}
    for key, (full, dim) in tensors.items():
        state[key] = sharded(full, dim, world, group) if dim is not None else full
    state.update(values)
    paths = {k: path_of(k) for k in state} if kind == "train" else None
    directory = os.path.join(out, f"{kind}-{world}")
    # torch 1.13 writes one file per item by default (2.x one per rank): both are covered.
    writer = dcp.FileSystemWriter(directory, single_file_per_rank=world > 1)
    dcp.save_state_dict(state, writer, process_group=group, planner=FlatteningPlanner(paths) if paths else None)
    if dist.get_rank(group) == 0:
        torch.save({"tensors": {k: v[0].contiguous() for k, v in tensors.items()}, "values": values},
                   directory + ".expected.pt")


def worker(rank, world, out, jobs, big_mib, port):
    """One process of `world`; each job runs on the first ranks of it, in a group of its own."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        if big_mib:
            state, paths = big_state(world, big_mib)
            writer = dcp.FileSystemWriter(os.path.join(out, "big"), single_file_per_rank=True)
            dcp.save_state_dict(state, writer, planner=FlatteningPlanner(paths))
            return
        for kind, size in jobs:
            group = dist.new_group(list(range(size)))  # every rank takes part in making it
            if rank < size:
                save(out, kind, size, group)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def big_state(world, mib):
    """About `mib` MiB of float32 ShardedTensors of 4096 columns split by rows, plus a small
    replicated tensor and a value."""
    state = {}
    remaining = mib << 20
    rows, cols, i = 4096, 4096, 0
    while remaining > 0:
        n = min(rows, max(world, remaining // (cols * 4)))
        spec = ChunkShardingSpec(dim=0, placements=[f"rank:{r}/cpu" for r in range(world)])
        st = sharded_tensor.empty(spec, n, cols, dtype=torch.float32)
        for shard in st.local_shards():
            shard.tensor.normal_(generator=torch.Generator().manual_seed(i))
        state[f"model.layers.{i}.weight"] = st
        remaining -= n * cols * 4
        i += 1
    state["model.norm.weight"] = torch.ones(cols)
    state["epoch"] = 1
    return state, {k: path_of(k) for k in state}


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--ranks", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--big-mib", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    # One set of processes makes every checkpoint (starting a process that imports torch is most
    # of the cost).
    jobs = [("train", w) for w in args.ranks] + ([("flat", 2)] if 2 in args.ranks else [])
    world = 2 if args.big_mib else max(size for _, size in jobs)
    mp.spawn(worker, args=(world, args.out, jobs, args.big_mib, free_port()), nprocs=world, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
