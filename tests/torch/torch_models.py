"""The Python side of the ckpt::torch tests: four models that tests/torch/models.h mirrors in C++.

Python trains each a step (so buffers differ from their initial values), saves it four ways
(state_dict, whole module, TorchScript, training checkpoint) and records outputs; the C++ test
loads each through ckpt::libtorch and must produce the same outputs bit for bit. The other way,
the C++ test trains and saves, and `check` loads C++'s files here with load_state_dict(strict=True).

    torch_models.py make DIR     write Python's files into DIR
    torch_models.py check DIR    judge the files the C++ test wrote into DIR
"""
import sys

import torch
from torch import nn
import torch.nn.functional as F


class BufferNet(nn.Module):
    """A plain register_buffer (a running mean of the input), and a non-persistent counter."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)
        self.register_buffer("offset", torch.zeros(4))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x):
        if self.training:
            self.offset.mul_(0.9).add_(x.mean(0), alpha=0.1)
            self.seen.add_(x.shape[0])
        return self.fc2(torch.relu(self.fc1(x - self.offset)))


class SeqRNN(nn.Module):
    """An RNN reading the first `sequence_length` steps: a fixed int64 buffer."""

    def __init__(self, sequence_length: int = 1):
        super().__init__()
        self.rnn = nn.RNN(3, 5, batch_first=True)
        self.fc = nn.Linear(5, 2)
        self.register_buffer("sequence_length", torch.tensor(sequence_length, dtype=torch.int64))

    def forward(self, x):
        steps = int(self.sequence_length)
        out, _ = self.rnn(x[:, :steps])
        return self.fc(out[:, -1])


class LSTMInit(nn.Module):
    """An LSTM whose initial state is a pair of buffers learned as running means of its final state."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 6, batch_first=True)
        self.fc = nn.Linear(6, 2)
        self.register_buffer("init_hidden", torch.zeros(1, 1, 6))
        self.register_buffer("init_cell", torch.zeros(1, 1, 6))

    def forward(self, x):
        b = x.shape[0]
        h0 = self.init_hidden.expand(1, b, 6).contiguous()
        c0 = self.init_cell.expand(1, b, 6).contiguous()
        out, (h, c) = self.lstm(x, (h0, c0))
        if self.training:
            self.init_hidden.mul_(0.5).add_(h.detach().mean(1, keepdim=True), alpha=0.5)
            self.init_cell.mul_(0.5).add_(c.detach().mean(1, keepdim=True), alpha=0.5)
        return self.fc(out[:, -1])


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + x)


class ResNetish(nn.Module):
    """A ResNet-style network: convolutions, BatchNorm (run in eval mode), a residual block."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.block = Block()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.block(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


# name -> (constructor as Python builds it for the fixtures, constructor as the other side's
# default, input shape, optimizer)
MODELS = {
    "buffer_net": (BufferNet, BufferNet, (5, 4), "adam"),
    "seq_rnn": (lambda: SeqRNN(6), SeqRNN, (3, 8, 3), "adam"),
    "lstm_init": (LSTMInit, LSTMInit, (3, 7, 3), "sgd"),
    "resnetish": (ResNetish, ResNetish, (2, 3, 6, 6), "adamw"),
}
NON_PERSISTENT = {"buffer_net": ["seen"]}


def make_optimizer(kind, model):
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.85, 0.98), eps=1e-7, weight_decay=5e-2)
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3,
                           nesterov=False)


def train_step(model, opt, x):
    model.train()
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()


def make(out):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for name, (build, _, shape, kind) in MODELS.items():
        model = build()
        opt = make_optimizer(kind, model)
        x_train = torch.randn(*shape)
        x_eval = torch.randn(*shape)
        x_next = torch.randn(*shape)
        train_step(model, opt, x_train)
        train_step(model, opt, x_next)  # a second step: Adam's step count and moments are not trivial
        model.eval()
        with torch.no_grad():
            y_eval = model(x_eval)
        torch.save(model.state_dict(), f"{out}/{name}.sd.pt")
        torch.save(model, f"{out}/{name}.module.pt")
        torch.jit.script(model).save(f"{out}/{name}.script.pt")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 2},
                   f"{out}/{name}.train.pt")
        # One more step from the training checkpoint: what C++ must reproduce after loading it.
        train_step(model, opt, x_train)
        record = {"x_eval": x_eval, "y_eval": y_eval, "x_train": x_train}
        for key, value in model.state_dict().items():
            record["after." + key] = value
        torch.save(record, f"{out}/{name}.io.pt")
        print(f"{name}: wrote {name}.sd.pt, .module.pt, .script.pt, .train.pt, .io.pt")


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def check(out):
    torch.set_num_threads(1)
    failures = 0
    for name, (_, build, _, kind) in MODELS.items():
        io = torch.load(f"{out}/cxx_{name}.io.pt")
        # The state_dict C++ saved: strict load, then the outputs C++ recorded, bit for bit.
        model = build()
        model.load_state_dict(torch.load(f"{out}/cxx_{name}.sd.pt"), strict=True)
        model.eval()
        with torch.no_grad():
            y = model(io["x_eval"])
        ok = same(y, io["y_eval"])
        # The training checkpoint: model and optimizer, then one more step equal to C++'s.
        model = build()
        opt = make_optimizer(kind, model)
        ckpt = torch.load(f"{out}/cxx_{name}.train.pt")
        model.load_state_dict(ckpt["model"], strict=True)
        opt.load_state_dict(ckpt["optimizer"])
        ok_epoch = ckpt.get("epoch") == 2
        train_step(model, opt, io["x_train"])
        after = {k[len("after."):]: v for k, v in io.items() if k.startswith("after.")}
        sd = model.state_dict()
        bad = [k for k in sd if k not in after or not same(sd[k], after[k])]
        bad += [k for k in after if k not in sd]
        status = "ok" if ok and ok_epoch and not bad else "FAIL"
        print(f"{name}: outputs {'equal' if ok else 'DIFFER'}, epoch {'ok' if ok_epoch else ckpt.get('epoch')}, "
              f"after a step {'equal' if not bad else 'differ in ' + ', '.join(bad)}: {status}")
        failures += status != "ok"
    if failures:
        sys.exit(f"{failures} models failed")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](sys.argv[2])
