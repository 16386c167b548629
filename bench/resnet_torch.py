#!/usr/bin/env python3
"""The PyTorch side of bench/resnet.sh: the net of an sn weights file (the
run's initial weights, so both start from the same point), built in torch.nn
from its YAML (tests/cli/torch_reference.py), trained on the same shards with
the same recipe as one process: the same solver, lr, weight decay, batch and
augmentation (crop after padding with a black pixel, horizontal mirror), a
cosine schedule over the same number of examples, evaluated on the same test
set.  Prints one JSON line: accuracy, loss, seconds, images, threads.

  resnet_torch.py WEIGHTS TEST SHARD... --examples N --solver adam|momentum
                  --lr X [--weight-decay W] [--lr-min X] [--batch 64]
                  [--crop-pad 2] [--mirror] [--threads T] [--seed 1]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "cli"))
import torch_reference as ref  # noqa: E402


def augment(torch, x, pad_value, p, mirror, gen):
    """Random crop of x [B,C,H,W] after padding by p with pad_value[c], then
    a random left-right flip: torchvision's RandomCrop + RandomHorizontalFlip
    done batch-wide by hand (torchvision is not a dependency)."""
    B, C, H, W = x.shape
    if p:
        padded = pad_value.view(1, C, 1, 1).expand(B, C, H + 2 * p, W + 2 * p).clone()
        padded[:, :, p:p + H, p:p + W] = x
        dy = torch.randint(0, 2 * p + 1, (B,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (B,), generator=gen)
        rows = (dy.view(B, 1) + torch.arange(H).view(1, H))           # [B,H]
        cols = (dx.view(B, 1) + torch.arange(W).view(1, W))           # [B,W]
        x = padded[torch.arange(B).view(B, 1, 1, 1), torch.arange(C).view(1, C, 1, 1),
                   rows.view(B, 1, H, 1), cols.view(B, 1, 1, W)]
    if mirror:
        flip = torch.rand(B, generator=gen) < 0.5
        x = torch.where(flip.view(B, 1, 1, 1), x.flip(3), x)
    return x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("weights")
    p.add_argument("test")
    p.add_argument("shards", nargs="+")
    p.add_argument("--examples", type=int, required=True)
    p.add_argument("--solver", choices=["adam", "momentum"], default="adam")
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lr-min", type=float, default=0.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--crop-pad", type=int, default=0)
    p.add_argument("--mirror", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    net = ref.TorchNet(a.weights)
    parts = [ref.normalised(s) for s in a.shards]
    x = torch.from_numpy(np.concatenate([q[0] for q in parts]))
    y = torch.from_numpy(np.concatenate([q[1] for q in parts]))
    tx, ty = (torch.from_numpy(v) for v in ref.normalised(a.test))
    meta = ref.read_st(a.shards[0])[1]
    mean = np.array(json.loads(meta["mean"]), dtype=np.float32)
    std = np.array(json.loads(meta["std"]), dtype=np.float32)
    pad_value = torch.from_numpy(-mean / std)   # a black pixel, normalised

    params = net.modules.parameters()
    if a.solver == "adam":
        opt = torch.optim.Adam(params, lr=a.lr, weight_decay=a.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    steps = a.examples // a.batch
    n = len(y)
    t0 = time.perf_counter()
    net.modules.train()
    perm, at = torch.randperm(n, generator=gen), 0
    for step in range(steps):
        lr = a.lr_min + 0.5 * (a.lr - a.lr_min) * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        if at + a.batch > n:
            perm, at = torch.randperm(n, generator=gen), 0
        idx = perm[at:at + a.batch]
        at += a.batch
        xb = augment(torch, x[idx], pad_value, a.crop_pad, a.mirror, gen)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net.logits(xb), y[idx])
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    net.modules.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(ty), 1000):
            logits = net.logits(tx[i:i + 1000])
            loss_sum += torch.nn.functional.cross_entropy(logits, ty[i:i + 1000],
                                                          reduction="sum").item()
            correct += (logits.argmax(1) == ty[i:i + 1000]).sum().item()
    print(json.dumps({"accuracy": correct / len(ty), "loss": loss_sum / len(ty),
                      "seconds": time.perf_counter() - t0, "train_seconds": train_s,
                      "images": steps * a.batch, "threads": a.threads,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
