#!/usr/bin/env python3
"""Writes zip-based fixtures of tests/data: a small torch.save file and numpy.savez file written
by the real libraries (good/torch_save.pt, good/numpy_savez.npz; tests/test_zip.cpp flips every
byte of them), and corrupt copies whose zip records disagree (bad/, with the exact errors
tests/test_golden.cpp expects).

    make_zip_fixtures.py DATADIR      (DATADIR = tests/data)
"""
import io
import os
import zipfile
import struct
import sys

import numpy as np
import torch


def local_headers(raw):
    """(offset, name, extra length offset) of each local header, in file order."""
    out, at = [], 0
    while (at := raw.find(b"PK\x03\x04", at)) >= 0:
        name_len = struct.unpack_from("<H", raw, at + 26)[0]
        out.append((at, bytes(raw[at + 30:at + 30 + name_len])))
        at += 4
    return out


def central_headers(raw):
    out, at = [], 0
    while (at := raw.find(b"PK\x01\x02", at)) >= 0:
        name_len = struct.unpack_from("<H", raw, at + 28)[0]
        out.append((at, bytes(raw[at + 46:at + 46 + name_len])))
        at += 4
    return out


def data_start(raw, local):
    name_len, extra_len = struct.unpack_from("<HH", raw, local + 26)
    return local + 30 + name_len + extra_len


def main():
    data = sys.argv[1]
    good, bad = os.path.join(data, "good"), os.path.join(data, "bad")
    torch.manual_seed(11)
    w = torch.randn(4, 6)
    # "w_t" and "row" share w's storage: one zip entry for three tensors.
    state = {"w": w, "w_t": w.t(), "row": w[2], "b": torch.arange(5, dtype=torch.int64)}
    pt_path = os.path.join(good, "torch_save.pt")
    torch.save(state, pt_path)
    rng = np.random.default_rng(11)
    npz_path = os.path.join(good, "numpy_savez.npz")
    np.savez(npz_path, a=rng.standard_normal((3, 5)).astype(np.float32), f=np.asfortranarray(np.arange(6.0).reshape(2, 3)),
             i=np.arange(7, dtype=np.int16))
    pt, npz = open(pt_path, "rb").read(), open(npz_path, "rb").read()

    def write(name, raw):
        open(os.path.join(bad, name), "wb").write(bytes(raw))

    # One bit flipped inside a tensor's bytes: only the entry's CRC-32 tells.
    raw = bytearray(pt)
    local = [at for at, name in local_headers(raw) if name.endswith(b"/data/0")][0]
    raw[data_start(raw, local) + 5] ^= 0x10
    write("pt_crc_flipped.pt", raw)
    raw = bytearray(npz)
    local = [at for at, name in local_headers(raw) if name == b"i.npy"][0]
    raw[data_start(raw, local) + 128 + 3] ^= 0x01  # after the 128-byte npy preamble
    write("npz_crc_flipped.npz", raw)
    # A local header whose extra field is 4 bytes longer than it was: the data would be read
    # 4 bytes further on.
    for source, name, entry in ((pt, "pt_local_extra_shifted.pt", b"/data/1"), (npz, "npz_local_extra_shifted.npz", b"a.npy")):
        raw = bytearray(source)
        local = [at for at, n in local_headers(raw) if n.endswith(entry)][0]
        struct.pack_into("<H", raw, local + 28, struct.unpack_from("<H", raw, local + 28)[0] + 4)
        write(name, raw)
    # The central directory's offset of one entry points at another entry: f.npy would be read
    # as a.npy's array.
    raw = bytearray(npz)
    locals_ = dict((n, at) for at, n in local_headers(raw))
    central = dict((n, at) for at, n in central_headers(raw))
    struct.pack_into("<I", raw, central[b"f.npy"] + 42, locals_[b"a.npy"])
    write("npz_overlapping_entries.npz", raw)
    # A local header naming another entry than the central directory does.
    raw = bytearray(npz)
    at = locals_[b"i.npy"]
    raw[at + 30:at + 31] = b"j"
    write("npz_local_name_differs.npz", raw)
    # ckpt's entry comment naming another tensor than the entry (a flipped bit in a comment, which
    # no CRC covers): refused rather than read under the other name.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        arr = io.BytesIO()
        np.save(arr, np.arange(4, dtype=np.float32))
        info = zipfile.ZipInfo("layer3.bias.npy")
        info.comment = b'{"ckpt": 1, "role": "parameter", "name": "lcyer3.bias"}'
        z.writestr(info, arr.getvalue())
    write("npz_comment_name_differs.npz", buf.getvalue())


if __name__ == "__main__":
    main()
