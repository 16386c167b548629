#!/usr/bin/env python3
"""The PyTorch side of bench/train.sh: the net of an sn weights file, built in
torch.nn from its YAML (tests/cli/torch_reference.py), trained with SGD with
momentum on the same data at the same batch size and thread count, and run
for inference.  Prints one JSON line: train_images_per_s,
infer_images_per_s.

  torch_train.py WEIGHTS DATA --threads T [--batch 64] [--seconds 3]
                 [--infer-batch 256]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "cli"))
import torch_reference as ref  # noqa: E402


def timed(fn, seconds, warmup):
    """Calls per second of fn after `warmup` untimed calls, over >= seconds."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= seconds:
            return n / t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("weights")
    p.add_argument("data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=3)
    a = p.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = ref.TorchNet(a.weights)
    x, y = ref.normalised(a.data)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    n = len(y)
    opt = torch.optim.SGD(net.modules.parameters(), lr=0.01, momentum=0.9)
    pos = [0]

    def train_step():
        i = pos[0]
        pos[0] = (i + a.batch) % max(1, n - a.batch)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net.logits(x[i:i + a.batch]), y[i:i + a.batch])
        loss.backward()
        opt.step()

    net.modules.train()
    train = timed(train_step, a.seconds, 5) * a.batch

    def infer():
        with torch.no_grad():
            for i in range(0, n, a.infer_batch):
                torch.softmax(net.logits(x[i:i + a.infer_batch]), 1)

    net.modules.eval()
    inf = timed(infer, a.seconds, 1) * n
    print(json.dumps({"threads": a.threads, "train_images_per_s": train,
                      "infer_images_per_s": inf, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
