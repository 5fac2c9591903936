#!/usr/bin/env python3
"""The libtorch benchmark (README, "libtorch"): a state_dict of about MIB MiB (Linear layers of
WIDTH x WIDTH float32), saved by torch.save, loaded into a module of the same shape

  - by Python: torch.load + model.load_state_dict (the baseline), and
  - by C++: ckpt::libtorch::load, copying into the module and zero-copy,

all in this run, against reading the file's bytes; each figure is the median of REPEAT runs with
the file in the page cache (each step reads it once first).

    tools/torch-bench.py BUILD_DIR WORKDIR [--mib 1024] [--width 4096] [--repeat 3]
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap

parser = argparse.ArgumentParser()
parser.add_argument("build")
parser.add_argument("work")
parser.add_argument("--mib", type=int, default=1024)
parser.add_argument("--width", type=int, default=4096)
parser.add_argument("--repeat", type=int, default=3)
args = parser.parse_args()
layer_bytes = (args.width * args.width + args.width) * 4
layers = max(1, round(args.mib * 2**20 / layer_bytes))
os.makedirs(args.work, exist_ok=True)
path = os.path.join(args.work, "bench.pt")
python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# Python: make the file, then time torch.load + load_state_dict in a process of its own.
script = textwrap.dedent(f"""
    import json, statistics, time, torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear({args.width}, {args.width}) for _ in range({layers})])
    torch.save(model.state_dict(), {path!r})
    open({path!r}, "rb").read()
    times = []
    for _ in range({args.repeat}):
        start = time.perf_counter()
        model.load_state_dict(torch.load({path!r}), strict=True)
        times.append(time.perf_counter() - start)
    print(json.dumps({{"python": statistics.median(times)}}))
""")
py = json.loads(subprocess.run([python, "-c", script], capture_output=True, text=True, check=True).stdout)
cxx = json.loads(subprocess.run([os.path.join(args.build, "ckpt-torch-bench"), path, str(layers), str(args.width),
                                 str(args.repeat)], capture_output=True, text=True, check=True).stdout)
size = os.path.getsize(path) / 2**20
print(f"{layers} x Linear({args.width}, {args.width}): {size:.0f} MiB .pt, median of {args.repeat}, page cache warm")
print(f"  read the file's bytes            {cxx['read']:7.3f} s")
print(f"  torch.load + load_state_dict     {py['python']:7.3f} s  (baseline)")
for key, label in [("copy", "ckpt::libtorch::load"), ("zero", "ckpt::libtorch::load zero-copy"),
                   ("touched", "  zero-copy, then every value read")]:
    print(f"  {label:32} {cxx[key]:7.3f} s  {py['python'] / cxx[key]:5.2f}x faster than the baseline, "
          f"{cxx[key] / cxx['read']:5.2f}x the raw read")
