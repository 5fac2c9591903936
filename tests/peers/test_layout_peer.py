#!/usr/bin/env python3
"""The PyTorch <-> Flax layout mapping proved with numbers, not names.

For Linear, Conv1d/2d/3d, ConvTranspose2d, Embedding, BatchNorm and LayerNorm: a torch module's
state_dict goes through `checkpoint-convert --layout flax` into a Flax msgpack file, and a NumPy
implementation of the Flax layer (x @ kernel + bias, convolution with [*k, in, out] kernels on
channels-last input, lax.conv_transpose without kernel flipping, table lookup, normalization
with scale) run on the converted tensors must compute what the torch module computes on the same
input. Then torchvision's resnet18 goes torch -> flax -> torch and must come back bit-identical,
computing exactly the same outputs. A parameter named `variance` must not be taken for a running
variance.

    test_layout_peer.py CHECKPOINT_CONVERT WORKDIR
"""
import itertools
import os
import shutil
import sys

import msgpack
import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_common import check, finish, run  # noqa: E402
from test_flax_peer import msgpack_restore  # noqa: E402  (the Flax wire format, as the flax peer reads it)




def correlate(x, kernel, stride):
    """Flax Conv without padding: x [N, *spatial, C_in] channels-last, kernel [*k, C_in, C_out]."""
    ks = kernel.shape[:-2]
    out_sizes = [(x.shape[1 + d] - ks[d]) // stride + 1 for d in range(len(ks))]
    y = np.zeros((x.shape[0], *out_sizes, kernel.shape[-1]))
    for offset in itertools.product(*[range(k) for k in ks]):
        window = x[(slice(None),) + tuple(slice(o, o + stride * (n - 1) + 1, stride)
                                          for o, n in zip(offset, out_sizes))]
        y += np.tensordot(window, kernel[offset], axes=([-1], [0]))
    return y


def flax_conv(x, kernel, bias, stride, padding):
    pad = [(0, 0)] + [(padding, padding)] * (x.ndim - 2) + [(0, 0)]
    return correlate(np.pad(x, pad), kernel, stride) + bias


def flax_conv_transpose(x, kernel, bias, stride, torch_padding):
    """lax.conv_transpose (transpose_kernel=False): dilate the input by the stride, pad by
    k - 1 - p, correlate with the kernel as it is."""
    spatial = x.shape[1:-1]
    dilated = np.zeros((x.shape[0], *[(n - 1) * stride + 1 for n in spatial], x.shape[-1]))
    dilated[(slice(None),) + tuple(slice(None, None, stride) for _ in spatial)] = x
    ks = kernel.shape[:-2]
    pad = [(0, 0)] + [(k - 1 - torch_padding, k - 1 - torch_padding) for k in ks] + [(0, 0)]
    return correlate(np.pad(dilated, pad), kernel, 1) + bias


def channels_last(t):
    return np.moveaxis(t.detach().double().numpy(), 1, -1)


class Named(torch.nn.Module):
    """An Embedding and a ConvTranspose2d with in == out (module level: torch.save pickles it)."""

    def __init__(self):
        super().__init__()
        self.tokens = torch.nn.Embedding(10, 4)
        self.up = torch.nn.ConvTranspose2d(4, 4, kernel_size=3, stride=2, padding=1)

    def forward(self, idx, x):
        return self.tokens(idx), self.up(x)


def main():
    convert, work = sys.argv[1:3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(0)

    def to_flax(label, module, *extra):
        pt = os.path.join(work, label + ".pt")
        out = os.path.join(work, label + ".msgpack")
        torch.save(module.state_dict(), pt)
        r = run(convert, "-q", "--force", "--layout", "flax", *extra, pt, out)
        check(r.returncode == 0, f"{label}: convert: {r.stderr}")
        return msgpack_restore(open(out, "rb").read()) if r.returncode == 0 else None

    def close(label, got, want):
        check(got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-5),
              f"{label}: the Flax computation differs from torch's (max {np.abs(got - want).max() if got.shape == want.shape else got.shape})")

    d = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731

    # Linear: x @ kernel + bias.
    m = torch.nn.Linear(5, 3)
    v = to_flax("linear", m)
    if v:
        x = torch.randn(4, 5)
        p = v["params"]
        close("Linear", x.double().numpy() @ d(p["kernel"]) + d(p["bias"]), m(x).detach().double().numpy())

    # ConvNd, channels-last with [*k, in, out] kernels; stride and padding as torch's.
    for n, cls in [(1, torch.nn.Conv1d), (2, torch.nn.Conv2d), (3, torch.nn.Conv3d)]:
        m = cls(3, 4, kernel_size=3, stride=2, padding=1)
        v = to_flax(f"conv{n}d", m)
        if v:
            x = torch.randn(2, 3, *([7] * n))
            p = v["params"]
            got = flax_conv(channels_last(x), d(p["kernel"]), d(p["bias"]), 2, 1)
            close(f"Conv{n}d", got, channels_last(m(x)))

    # ConvTranspose2d (in != out, so its bias shows what it is).
    m = torch.nn.ConvTranspose2d(3, 5, kernel_size=3, stride=2, padding=1)
    v = to_flax("conv_transpose2d", m)
    if v:
        x = torch.randn(2, 3, 4, 4)
        p = v["params"]
        got = flax_conv_transpose(channels_last(x), d(p["kernel"]), d(p["bias"]), 2, 1)
        close("ConvTranspose2d", got, channels_last(m(x)))

    # A grouped ConvTranspose has no Flax counterpart: refused, named.
    class Grouped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.ConvTranspose2d(4, 6, kernel_size=3, groups=2)
    pt = os.path.join(work, "grouped.pt")
    torch.save(Grouped().state_dict(), pt)
    r = run(convert, "-q", "--force", "--layout", "flax", "--conv-transpose", "^up$", pt, os.path.join(work, "g.msgpack"))
    check(r.returncode == 2 and "2 tensors cannot be placed in the flax layout: 'up.weight', 'up.bias'" in r.stderr,
          f"grouped ConvTranspose: {r.returncode} {r.stderr}")

    # Embedding, declared (a state_dict cannot tell it from a Linear without bias).
    class WithEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = torch.nn.Embedding(10, 4)
    m = WithEmbedding()
    v = to_flax("embedding", m, "--embedding", "^tokens$")
    if v:
        idx = torch.tensor([[1, 7, 3]])
        close("Embedding", d(v["params"]["tokens"]["embedding"])[idx.numpy()], m.tokens(idx).detach().double().numpy())

    # A whole module (torch.save(model)) or TorchScript file names its classes: an Embedding and a
    # ConvTranspose with in == out (its bias cannot show it) are placed without being declared.
    m = Named()
    idx, x = torch.tensor([[1, 7, 3]]), torch.randn(2, 4, 5, 5)
    for label, save in [("module", lambda path: torch.save(m, path)),
                        ("torchscript", lambda path: torch.jit.save(torch.jit.script(m), path))]:
        pt, out = os.path.join(work, f"named_{label}.pt"), os.path.join(work, f"named_{label}.msgpack")
        save(pt)
        r = run(convert, "-q", "--force", "--layout", "flax", pt, out)
        check(r.returncode == 0, f"{label}: convert: {r.stderr}")
        if r.returncode == 0:
            p = msgpack_restore(open(out, "rb").read())["params"]
            close(f"Embedding from a {label}", d(p["tokens"]["embedding"])[idx.numpy()], m.tokens(idx).detach().double().numpy())
            got = flax_conv_transpose(channels_last(x), d(p["up"]["kernel"]), d(p["up"]["bias"]), 2, 1)
            close(f"ConvTranspose2d (in == out) from a {label}", got, channels_last(m.up(x)))
    # The same as a state_dict is a Linear and a Conv: shapes alone cannot say otherwise, and
    # neither can the name 'tokens'; both decisions are reported on stderr, naming the tensors.
    pt = os.path.join(work, "named_state_dict.pt")
    torch.save(m.state_dict(), pt)
    r = run(convert, "-q", "--force", "--layout", "flax", pt, os.path.join(work, "named_state_dict.msgpack"))
    check(r.returncode == 0, f"named_state_dict: {r.stderr}")
    if r.returncode == 0:
        v = msgpack_restore(open(os.path.join(work, "named_state_dict.msgpack"), "rb").read())
        check("kernel" in v["params"]["tokens"], "a state_dict's 'tokens' was not taken for a Linear")
        check("taken for a Linear (kernel transposed): 'tokens.weight'" in r.stderr, f"no note for tokens: {r.stderr!r}")
        # up is a ConvTranspose2d(4, 4) with a bias: in = out, so its bias cannot tell it from a Conv.
        check("taken for a Conv: 'up.weight'" in r.stderr, f"no note for up (ConvTranspose in = out): {r.stderr!r}")

    # Embeddings in a state_dict, decided from evidence (ckpt-h5 issue 10): the module's name
    # (emb, wte, embed_tokens, word_embeddings ...: taken, with a note), the user's whole-name
    # regex (--embedding emb must not catch emb_proj), or a template in the target layout.
    class Lm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 6)
            self.wte = torch.nn.Embedding(12, 6)
            self.emb_proj = torch.nn.Linear(6, 10, bias=False)
            self.tokens = torch.nn.Embedding(7, 6)
    m = Lm()
    pt = os.path.join(work, "lm.pt")
    torch.save(m.state_dict(), pt)
    idx = torch.tensor([[1, 5, 3]])

    def lm_to_flax(label, *extra):
        out = os.path.join(work, f"{label}.msgpack")
        r = run(convert, "-q", "--force", "--layout", "flax", *extra, pt, out)
        check(r.returncode == 0, f"{label}: {r.stderr}")
        return (msgpack_restore(open(out, "rb").read())["params"] if r.returncode == 0 else None), r.stderr

    p, err = lm_to_flax("lm_names")
    if p:
        close("Embedding 'emb' by its name", d(p["emb"]["embedding"])[idx.numpy()], m.emb(idx).detach().double().numpy())
        close("Embedding 'wte' by its name", d(p["wte"]["embedding"])[idx.numpy()], m.wte(idx).detach().double().numpy())
        x = torch.randn(2, 6)
        close("Linear 'emb_proj'", x.double().numpy() @ d(p["emb_proj"]["kernel"]), m.emb_proj(x).detach().double().numpy())
        check("kernel" in p["tokens"], "'tokens' has no evidence: a Linear")
        check("2 2-D weights without a bias taken for an Embedding by the module's name: 'emb.weight', 'wte.weight'"
              in err, f"lm_names: note on names {err!r}")
        check("taken for a Linear (kernel transposed): 'emb_proj.weight', 'tokens.weight'" in err,
              f"lm_names: note on defaults {err!r}")
    p, err = lm_to_flax("lm_declared", "--embedding", "emb|tokens")
    if p:
        check("embedding" in p["emb"] and "embedding" in p["tokens"] and "kernel" in p["emb_proj"],
              f"--embedding matches whole names: {sorted((k, sorted(v)) for k, v in p.items())}")
    # A template in the target layout decides: here one that says tokens is an Embedding and
    # emb is a Linear (as a Flax model of the same names would).
    template = os.path.join(work, "lm_template.msgpack")
    def ext(a):
        return msgpack.ExtType(1, msgpack.packb([list(a.shape), str(a.dtype), a.tobytes()]))
    msgpack_bytes = msgpack.packb({"params": {"tokens": {"embedding": ext(np.zeros((7, 6), np.float32))},
                                              "emb": {"kernel": ext(np.zeros((6, 10), np.float32))}}})
    open(template, "wb").write(msgpack_bytes)
    p, err = lm_to_flax("lm_template", "--template", template)
    if p:
        check("embedding" in p["tokens"] and "kernel" in p["emb"] and "embedding" in p["wte"],
              f"--template decides: {sorted((k, sorted(v)) for k, v in p.items())}")
        check("'tokens.weight'" not in err and "'emb.weight'" not in err, f"template decisions need no note: {err!r}")

    # BatchNorm (eval: running statistics) with trained statistics.
    m = torch.nn.BatchNorm2d(4)
    m.train()
    for _ in range(3):
        m(torch.randn(8, 4, 5, 5))
    m.eval()
    v = to_flax("batchnorm", m)
    if v:
        x = torch.randn(2, 4, 3, 3)
        p, s = v["params"], v["batch_stats"]
        got = (channels_last(x) - d(s["mean"])) / np.sqrt(d(s["var"]) + m.eps) * d(p["scale"]) + d(p["bias"])
        close("BatchNorm2d", got, channels_last(m(x)))
        check("num_batches_tracked" not in s and v["ckpt.layout"]["num_batches_tracked"] == {"": 3},
              f"num_batches_tracked dropped, its value kept: {v.get('ckpt.layout')}")

    # LayerNorm.
    m = torch.nn.LayerNorm(6)
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()
    v = to_flax("layernorm", m)
    if v:
        x = torch.randn(3, 6)
        xd = x.double().numpy()
        mu, var = xd.mean(-1, keepdims=True), xd.var(-1, keepdims=True)
        close("LayerNorm", (xd - mu) / np.sqrt(var + m.eps) * d(v["params"]["scale"]) + d(v["params"]["bias"]),
              m(x).detach().double().numpy())

    # resnet18: torch -> flax -> torch, every tensor bit-identical, outputs exactly equal.
    model = torchvision.models.resnet18()
    model.train()
    model(torch.randn(2, 3, 64, 64))  # non-trivial running statistics and num_batches_tracked
    model.eval()
    pt = os.path.join(work, "resnet18.pt")
    flax = os.path.join(work, "resnet18.msgpack")
    back = os.path.join(work, "resnet18.back.pt")
    torch.save(model.state_dict(), pt)
    r1 = run(convert, "--force", "--layout", "flax", pt, flax)
    check(r1.returncode == 0 and "dropped 20 tensors" in r1.stderr, f"resnet18 -> flax: {r1.stderr}")
    r2 = run(convert, "-q", "--force", "--layout", "torch", flax, back)
    check(r2.returncode == 0, f"resnet18 flax -> torch: {r2.stderr}")
    if r1.returncode == 0 and r2.returncode == 0:
        v = msgpack_restore(open(flax, "rb").read())
        check(v["params"]["conv1"]["kernel"].shape == (7, 7, 3, 64) and v["params"]["fc"]["kernel"].shape == (512, 1000)
              and v["batch_stats"]["layer1"]["0"]["bn1"]["mean"].shape == (64,), "resnet18 flax shapes")
        state = torch.load(back, weights_only=True)
        check(list(state.keys()) == list(model.state_dict().keys()), "resnet18: names and order come back")
        check(all(torch.equal(state[k], t) and state[k].dtype == t.dtype for k, t in model.state_dict().items()),
              "resnet18: tensors come back bit-identical")
        fresh = torchvision.models.resnet18()
        fresh.load_state_dict(state, strict=True)
        fresh.eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            check(torch.equal(model(x), fresh(x)), "resnet18: outputs differ after torch -> flax -> torch")

    # Names are not guessed: a parameter `variance` is not a running variance; the mapping
    # refuses to place it, naming it, unless told to carry it over.
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
            self.variance = torch.nn.Parameter(torch.ones(2, 2, 2))
    pt = os.path.join(work, "odd.pt")
    torch.save(Odd().state_dict(), pt)
    r = run(convert, "-q", "--force", "--layout", "flax", pt, os.path.join(work, "odd.msgpack"))
    check(r.returncode == 2 and "1 tensor cannot be placed in the flax layout: 'variance'" in r.stderr,
          f"odd: {r.returncode} {r.stderr}")
    check(not os.path.exists(os.path.join(work, "odd.msgpack")), "odd: nothing written")
    r = run(convert, "--force", "--layout", "flax", "--keep-unmapped", pt, os.path.join(work, "odd.msgpack"))
    check(r.returncode == 0 and "left 1 tensor as they were (--keep-unmapped): variance" in r.stderr,
          f"odd --keep-unmapped: {r.stderr}")

    return finish("layout peer")


if __name__ == "__main__":
    sys.exit(main())
