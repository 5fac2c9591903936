#!/usr/bin/env python3
"""PyTorch distributed checkpoints written by Debian's torch 1.13 from 1, 2 and 4 ranks
(make_dcp.py, here into WORKDIR) are read by ckpt without torch and judged by torch: every
tensor checkpoint-convert consolidates into safetensors and .pt equals the whole tensor the ranks
had, the training checkpoint's model, optimizer state and values land where torch had them,
slices across chunk boundaries equal torch's slices, and --verify checks every chunk's CRC-32.

    test_dcp_peer.py CHECKPOINT_CONVERT CHECKPOINT_INSPECT WORKDIR
"""
import json
import os
import shutil
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from peer_common import check, finish, run  # noqa: E402


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
              "I64": torch.int64, "I8": torch.int8, "BOOL": torch.bool, "C64": torch.complex64}
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        data = bytearray(raw[8 + n + begin:8 + n + end])
        t = torch.frombuffer(data, dtype=dtypes[e["dtype"]]) if data else torch.zeros(0, dtype=dtypes[e["dtype"]])
        out[name] = t.reshape(e["shape"])
    return out, meta


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def element(value):
    """A --slice --json value (NaN and Inf as strings) as a float."""
    return float(value) if not isinstance(value, list) else [element(v) for v in value]


def check_train(convert, inspect, work, world):
    directory = os.path.join(work, f"train-{world}")
    expected = torch.load(directory + ".expected.pt")
    tensors, values = expected["tensors"], expected["values"]
    label = f"train-{world}"

    # safetensors: the model's tensors under their names, the optimizer's as optim/<name>.
    out = os.path.join(work, f"{label}.safetensors")
    r = run(convert, directory, out, "--force", "--quiet")
    check(r.returncode == 0, f"{label}: convert to safetensors: {r.stderr}")
    check("not plain data" not in r.stderr, f"{label}: unexpected note: {r.stderr}")
    got, _ = read_safetensors(out)
    for key, want in tensors.items():
        name = key[len("model."):] if key.startswith("model.") else "optim/" + key[len("optim."):]
        check(name in got and same(got[name], want), f"{label}: safetensors {name} differs from torch's {key}")
    check(len(got) == len(tensors), f"{label}: safetensors holds {len(got)} tensors, torch had {len(tensors)}")

    # .pt: the nested checkpoint torch had, values included (betas a tuple again).
    out = os.path.join(work, f"{label}.pt")
    r = run(convert, directory, out, "--force", "--quiet")
    check(r.returncode == 0, f"{label}: convert to .pt: {r.stderr}")
    pt = torch.load(out)
    for key, want in tensors.items():
        if key.startswith("model."):
            have = pt["model"].get(key[len("model."):])
        else:
            have = pt
            for part in key.split("."):
                have = have.get(part) if isinstance(have, dict) else None
        check(have is not None and same(have, want), f"{label}: .pt {key} differs from torch's")
    check(pt.get("epoch") == values["epoch"], f"{label}: epoch {pt.get('epoch')}")
    group = pt.get("optim", {}).get("param_groups", [{}])[0]
    check(group.get("lr") == values["optim.param_groups.0.lr"] and group.get("betas") == values["optim.param_groups.0.betas"]
          and group.get("params") == values["optim.param_groups.0.params"], f"{label}: param_groups {group}")
    check(pt.get("note") == values["note"], f"{label}: note {pt.get('note')}")

    # The listing: roles inferred, the model found under "model", the optimizer a section.
    r = run(inspect, directory, "--json", "--verify")
    check(r.returncode == 0, f"{label}: inspect --verify: {r.stderr}")
    info = json.loads(r.stdout) if r.returncode == 0 else {}
    check(info.get("format") == "dcp" and info.get("model_key") == "model", f"{label}: format/model_key {info.get('format')}")
    check(info.get("verify", {}).get("checked") == len(tensors) - 1, f"{label}: verify {info.get('verify')}")  # the empty one has no chunk
    roles = {t["name"]: t["role"] for t in info.get("tensors", [])}
    check(roles.get("bn.running_mean") == "buffer" and roles.get("bn.num_batches_tracked") == "buffer" and
          roles.get("fc.weight") == "parameter", f"{label}: roles {roles}")
    check(info.get("sections", {}).get("optim", {}).get("count") == 4, f"{label}: sections {info.get('sections')}")

    # Slices across chunk boundaries (rows of embed, columns of fc, a 4-d conv).
    for spec, key, index in [
        ("embed.weight[10:40, 2:5]", "model.embed.weight", (slice(10, 40), slice(2, 5))),
        ("fc.weight[3:5, 4:17]", "model.fc.weight", (slice(3, 5), slice(4, 17))),
        ("conv.weight[1:8, 1, 0:2]", "model.conv.weight", (slice(1, 8), slice(1, 2), slice(0, 2))),
        ("optim/state.embed.weight.exp_avg[-3:, 11]", "optim.state.embed.weight.exp_avg", (slice(47, 50), slice(11, 12))),
    ]:
        r = run(inspect, directory, "--slice", spec, "--json")
        check(r.returncode == 0, f"{label}: --slice {spec}: {r.stderr}")
        if r.returncode != 0:
            continue
        s = json.loads(r.stdout)
        s = s[0] if isinstance(s, list) else s
        want = tensors[key][index]
        have = torch.tensor(element(s["values"]), dtype=torch.float64).reshape(want.shape)
        check(torch.equal(have, want.to(torch.float64)), f"{label}: --slice {spec} differs from torch's slice")


def check_flat(convert, inspect, work):
    directory = os.path.join(work, "flat-2")
    expected = torch.load(directory + ".expected.pt")
    out = os.path.join(work, "flat-2.pt")
    r = run(convert, directory, out, "--force", "--quiet")
    check(r.returncode == 0, f"flat-2: convert: {r.stderr}")
    pt = torch.load(out)
    # No planner_data: the keys are the state_dict's, so the file is the model's state_dict;
    # epoch rides beside it.
    for key, want in expected["tensors"].items():
        have = pt.get(key) if "model" not in pt else pt["model"].get(key)
        check(have is not None and same(have, want), f"flat-2: {key} differs")
    r = run(inspect, directory, "--json")
    info = json.loads(r.stdout) if r.returncode == 0 else {}
    check(info.get("model_key") == "" and info.get("metadata", {}).get("epoch") == 3, f"flat-2: {info.get('metadata')}")


def check_open_files(inspect, work):
    """train-1 has one file per item (torch 1.13's default): the reader raises a low soft limit
    on open files to what it needs."""
    directory = os.path.join(work, "train-1")
    files = len([f for f in os.listdir(directory) if f.endswith(".distcp")])
    r = subprocess.run(["bash", "-c", f'ulimit -Sn 16 && exec "$0" "$1" --verify', inspect, directory],
                       capture_output=True, text=True)
    check(files > 16 and r.returncode == 0, f"train-1 ({files} files) under ulimit -Sn 16: {r.stderr}")


def main():
    convert, inspect, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    gen = subprocess.run([sys.executable, os.path.join(HERE, "make_dcp.py"), work], capture_output=True, text=True)
    if gen.returncode != 0:
        print(gen.stdout, gen.stderr)
        check(False, "make_dcp.py failed")
        return finish("dcp")
    for world in (1, 2, 4):
        check_train(convert, inspect, work, world)
    check_flat(convert, inspect, work)
    check_open_files(inspect, work)
    return finish("dcp")


if __name__ == "__main__":
    sys.exit(main())
