#!/usr/bin/env python3
"""PyTorch benchmark: on one ~1 GiB .pt file, in one run, torch.load (Debian's torch, to CPU)
against ckpt's reader (every tensor materialized; zero-copy open + one tensor) and .pt -> ckpt-h5
conversion against a plain copy of the file. Prints figures and ratios.

    bench-pytorch.py [--ckpt-bench build/ckpt-bench] [--size-mib 1024] [--repeats 3] [--dir DIR]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch


def best_of(repeats, fn):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt-bench", default=os.path.join(os.path.dirname(__file__), "..", "build", "ckpt-bench"))
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="ckpt-bench-pt-")
    os.makedirs(work, exist_ok=True)
    try:
        torch.manual_seed(0)
        state, total, i = {}, 0, 0
        while total < args.size_mib << 20:  # a transformer-like mix of 4-16 MiB matrices and small vectors
            for name, shape in [("qkv.weight", (3072, 1024)), ("qkv.bias", (3072,)), ("out.weight", (1024, 1024)),
                                ("fc1.weight", (4096, 1024)), ("fc2.weight", (1024, 4096)), ("norm.weight", (1024,))]:
                t = torch.randn(shape)
                state[f"layers.{i}.{name}"] = t
                total += t.numel() * 4
            state[f"layers.{i}.norm.running_mean"] = torch.zeros(1024)
            i += 1
        path = os.path.join(work, "model.pt")
        torch.save(state, path)
        del state
        load = best_of(args.repeats, lambda: torch.load(path, map_location="cpu"))
        out = subprocess.run([args.ckpt_bench, "--pt", path, "--repeats", str(args.repeats), "--dir", work],
                             capture_output=True, text=True, check=True).stdout
        ckpt = {k: float(v) for k, v in (line.split("=") for line in out.split())}
        mib = os.path.getsize(path) / (1 << 20)
        print(f".pt file: {mib:.0f} MiB, {len(torch.load(path, map_location='cpu'))} tensors (best of {args.repeats})")
        print(f"  torch.load (baseline)                       {load:8.3f} s")
        print(f"  ckpt full read, every tensor copied         {ckpt['full_read_copies_s']:8.3f} s  "
              f"{load / ckpt['full_read_copies_s']:6.2f}x faster than torch.load")
        print(f"  ckpt full read, zero-copy views touched     {ckpt['full_read_views_touched_s']:8.3f} s  "
              f"{load / ckpt['full_read_views_touched_s']:6.2f}x faster than torch.load")
        print(f"  ckpt zero-copy open + one tensor            {ckpt['open_read_one_s'] * 1000:8.3f} ms "
              f"{load / ckpt['open_read_one_s']:6.0f}x faster than torch.load")
        print(f"  plain copy of the file (baseline)           {ckpt['copy_file_s']:8.3f} s")
        print(f"  .pt -> ckpt-h5 conversion                   {ckpt['convert_to_ckpt_h5_s']:8.3f} s  "
              f"{ckpt['convert_to_ckpt_h5_s'] / ckpt['copy_file_s']:6.2f}x the copy; "
              f"peak extra memory {ckpt['convert_peak_extra_mib']:.1f} MiB")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
