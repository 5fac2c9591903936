"""examples/torch_load.cpp as a user would run it (ctest torch.example): Python trains the Net of
the example's comment a few steps, saves a training checkpoint, and the example's logits for an
image of ones must equal Python's bit for bit (printed with 9 significant digits: exact for float32).

    run_example.py EXAMPLE_BINARY WORK_DIR
"""
import os
import subprocess
import sys

import torch
from torch import nn

binary, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
torch.set_num_threads(1)
torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


net = Net()
net.mean.copy_(torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
net.std.copy_(torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
for _ in range(3):
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
path = os.path.join(work, "net.pt")
torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, path)
net.eval()
with torch.no_grad():
    want = ["%.9g" % v for v in net(torch.ones(1, 3, 32, 32))[0].tolist()]
run = subprocess.run([binary, path], capture_output=True, text=True)
print(run.stderr, end="")
got = run.stdout.split()
if run.returncode != 0 or got != want:
    sys.exit(f"the example printed {got}, Python computed {want}")
print("the example's logits equal Python's")
