#!/usr/bin/env python3
"""Writes examples/tiny_resnet.safetensors: a small ResNet-shaped state_dict (torchvision names,
BatchNorm buffers) as a plain safetensors file with no ckpt roles, the way most checkpoints in
the wild look. Only numpy is needed; the values are seeded, so the file is reproducible."""
import json
import os
import struct

import numpy as np

rng = np.random.default_rng(2026)
tensors = {}


def conv(name, out_c, in_c, k):
    tensors[name + ".weight"] = rng.standard_normal((out_c, in_c, k, k)).astype("<f4") * 0.1


def bn(name, c):
    tensors[name + ".weight"] = np.ones(c, "<f4")
    tensors[name + ".bias"] = np.zeros(c, "<f4")
    tensors[name + ".running_mean"] = rng.standard_normal(c).astype("<f4") * 0.01
    tensors[name + ".running_var"] = np.abs(rng.standard_normal(c)).astype("<f4") + 0.5
    tensors[name + ".num_batches_tracked"] = np.array(1200, "<i8")


conv("conv1", 8, 3, 7)
bn("bn1", 8)
for layer, (c_in, c_out) in enumerate([(8, 8), (8, 16)], start=1):
    for block in range(2):
        prefix = f"layer{layer}.{block}"
        first_in = c_in if block == 0 else c_out
        conv(prefix + ".conv1", c_out, first_in, 3)
        bn(prefix + ".bn1", c_out)
        conv(prefix + ".conv2", c_out, c_out, 3)
        bn(prefix + ".bn2", c_out)
        if block == 0 and c_in != c_out:
            conv(prefix + ".downsample.0", c_out, c_in, 1)
            bn(prefix + ".downsample.1", c_out)
tensors["fc.weight"] = rng.standard_normal((10, 16)).astype("<f4") * 0.1
tensors["fc.bias"] = np.zeros(10, "<f4")

codes = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64"}
header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
for name, array in tensors.items():
    data = array.tobytes()
    header[name] = {"dtype": codes[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * ((8 - len(text) % 8) % 8)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_resnet.safetensors")
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
print(f"wrote {out}: {len(tensors)} tensors, {offset} bytes of data")
