#!/usr/bin/env python3
"""Fixtures and references for the sn-sgd/sn-eval tests, with json+numpy only
(no safetensors package), and the PyTorch reference for torch-reference.bats.

  data OUT --fmnist train|t10k --limit N [--offset O] [--stats-from FILE]
  data OUT --random N --shape C,H,W|D [--classes K] [--label-max L] [--dtype u8|f32]
  same A B                  exit 0 when every tensor of A and B is identical
  meta FILE KEY             print one metadata value
  check-forward W DATA EVAL.json PREDICTIONS.tsv   torch vs sn-eval (1e-4)
  check-sgd W0 DATA W1 LR   one plain SGD step on the whole DATA, torch vs sn-sgd
"""
import argparse
import gzip
import json
import struct
import sys
import zlib

import numpy as np

FMNIST = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "U8": np.uint8,
          "I64": np.int64, "F16": np.float16}


def read_st(path):
    """(tensors, metadata) of a safetensors file, checking the crc32."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    if "crc32" in meta and meta["crc32"] != "%08x" % zlib.crc32(data):
        sys.exit("%s: crc32 mismatch" % path)
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        tensors[name] = np.frombuffer(data[b:e], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return tensors, meta


def write_st(path, tensors, meta):
    names = {np.dtype(v): k for k, v in DTYPES.items()}
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        b = a.tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    data = b"".join(blobs)
    meta = dict(meta, crc32="%08x" % zlib.crc32(data))
    h = json.dumps(dict({"__metadata__": meta}, **header)).encode()
    h += b" " * (-(8 + len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def read_idx(path):
    raw = gzip.open(path).read()
    magic, = struct.unpack(">I", raw[:4])
    dims = struct.unpack(">%dI" % (magic & 0xff), raw[4:4 + 4 * (magic & 0xff)])
    return np.frombuffer(raw[4 + 4 * len(dims):], dtype=np.uint8).reshape(dims)


def cmd_data(a):
    meta = {"format": "sn.data.v1", "source": "torch_reference.py", "shard": "1/1", "seed": "0"}
    if a.fmnist:
        x = read_idx("%s/%s-images-idx3-ubyte.gz" % (FMNIST, a.fmnist))
        y = read_idx("%s/%s-labels-idx1-ubyte.gz" % (FMNIST, a.fmnist))
        x = x[a.offset:a.offset + a.limit].reshape(-1, 1, 28, 28)
        y = y[a.offset:a.offset + a.limit].astype(np.int32)
        classes, meta["class_names"] = 10, json.dumps(CLASS_NAMES)
    else:
        rng = np.random.default_rng(a.seed)
        shape = [a.random] + [int(s) for s in a.shape.split(",")]
        if a.dtype == "u8":
            x = rng.integers(0, 256, size=shape, dtype=np.uint8)
        else:
            x = rng.standard_normal(shape).astype(np.float32)
        classes = a.classes
        y = rng.integers(0, a.label_max or classes, size=a.random).astype(np.int32)
    if a.stats_from:
        m = read_st(a.stats_from)[1]
        meta["mean"], meta["std"] = m["mean"], m["std"]
    else:
        v = x.astype(np.float64) / (255.0 if x.dtype == np.uint8 else 1.0)
        axes = (0, 2, 3) if v.ndim == 4 else None
        mean = np.atleast_1d(v.mean(axis=axes)).tolist()
        std = np.atleast_1d(v.std(axis=axes)).tolist()
        meta["mean"], meta["std"] = json.dumps(mean), json.dumps(std)
    meta["classes"] = str(max(classes, int(y.max()) + 1))
    write_st(a.out, {"x": x, "y": y}, meta)


def cmd_same(a):
    ta, tb = read_st(a.a)[0], read_st(a.b)[0]
    if ta.keys() != tb.keys():
        sys.exit("tensor names differ: %s vs %s" % (sorted(ta), sorted(tb)))
    for k in ta:
        if ta[k].shape != tb[k].shape or ta[k].tobytes() != tb[k].tobytes():
            diff = np.abs(ta[k].astype(np.float64) - tb[k].astype(np.float64)).max()
            sys.exit("%s differs (max abs %g)" % (k, diff))


def cmd_meta(a):
    print(read_st(a.file)[1][a.key])


def normalised(path):
    t, m = read_st(path)
    x = t["x"].astype(np.float32)
    if t["x"].dtype == np.uint8:
        x = x / np.float32(255)
    mean = np.array(json.loads(m["mean"]), dtype=np.float32)
    std = np.array(json.loads(m["std"]), dtype=np.float32)
    if x.ndim == 4:
        mean, std = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
    return (x - mean) / std, t["y"].astype(np.int64)


# sn's default layer names: a counter per prefix, for layers without name:
PREFIX = {"conv": "conv", "dense": "fc", "batchnorm": "bn"}


class TorchNet:
    """The net of an sn weights file, built from its `net` YAML in torch.nn.
    A layer reads the previous layer's output unless it lists `inputs:`
    (earlier layers by name, or `input`); add and concat join several."""

    def __init__(self, weights_path):
        import torch
        import yaml
        tensors, meta = read_st(weights_path)
        spec = yaml.safe_load(meta["net"])
        self.torch, self.layers, self.modules = torch, [], torch.nn.ModuleDict()
        shapes = {"input": list(spec["input"])}
        counts, prev = {}, "input"
        for item in spec["layers"]:
            kind, opt = (item, {}) if isinstance(item, str) else (item["type"], item)
            name = opt.get("name")
            if name is None:
                prefix = PREFIX.get(kind, kind)
                counts[prefix] = counts.get(prefix, 0) + 1
                name = "%s%d" % (prefix, counts[prefix])
            inputs = opt.get("inputs", [prev])
            inputs = [inputs] if isinstance(inputs, str) else inputs
            mod, shapes[name] = self.build(kind, opt, [shapes[i] for i in inputs])
            if mod is not None and len(list(mod.parameters())) > 0:
                self.modules[name] = mod
            self.layers.append((kind, name, inputs, mod))
            prev = name
        state = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
        missing, unexpected = self.modules.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)

    def build(self, kind, o, shapes):
        nn = self.torch.nn
        if kind == "add":
            return None, shapes[0]
        if kind == "concat":
            return None, [sum(s[0] for s in shapes)] + shapes[0][1:]
        shape = shapes[0]
        if kind == "conv":
            k, s, p = o["kernel"], o.get("stride", 1), o.get("pad", 0)
            m = nn.Conv2d(shape[0], o["filters"], k, s, p, bias=bool(o.get("bias", 1)))
            return m, [o["filters"], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
        if kind in ("maxpool", "avgpool"):
            k, p = o["kernel"], o.get("pad", 0)
            s = o.get("stride", k)
            m = nn.MaxPool2d(k, s, p) if kind == "maxpool" else nn.AvgPool2d(k, s, p)
            return m, [shape[0], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
        if kind == "global_avgpool":
            return nn.AdaptiveAvgPool2d(1), [shape[0]]
        if kind == "dense":
            d = int(np.prod(shape))
            return nn.Linear(d, o["units"], bias=bool(o.get("bias", 1))), [o["units"]]
        if kind == "batchnorm":
            cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            return cls(shape[0], eps=o.get("eps", 1e-5), momentum=o.get("momentum", 0.1)), shape
        simple = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
                  "flatten": nn.Flatten(), "leaky_relu": nn.LeakyReLU(o.get("slope", 0.01)),
                  "dropout": nn.Dropout(o.get("rate", 0.5))}
        if kind in simple:
            return simple[kind], ([int(np.prod(shape))] if kind == "flatten" else shape)
        if kind == "softmax_cross_entropy":
            return None, shape
        raise SystemExit("unknown layer kind %s" % kind)

    def logits(self, x):
        acts = {"input": x}
        for kind, name, inputs, mod in self.layers:
            ins = [acts[i] for i in inputs]
            if kind == "add":
                x = sum(ins[1:], ins[0])
            elif kind == "concat":
                x = self.torch.cat(ins, 1)
            else:
                x = ins[0]
            if kind == "dense":       # sn's dense flattens [C,H,W] itself
                x = x.flatten(1)
            if mod is not None:
                x = mod(x)
            if kind == "global_avgpool":
                x = x.flatten(1)
            acts[name] = x
        return x

    def state(self):
        return {k: v.detach().numpy() for k, v in self.modules.state_dict().items()
                if not k.endswith("num_batches_tracked")}


def cmd_check_forward(a):
    import torch
    net = TorchNet(a.weights)
    x, y = normalised(a.data)
    net.modules.eval()
    with torch.no_grad():
        logits = net.logits(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()
        prob = torch.softmax(logits, 1)
    report = json.load(open(a.eval_json))
    rows = np.loadtxt(a.predictions, skiprows=1, ndmin=2)
    best = prob.max(1)
    bad = []
    if abs(report["loss"] - loss) > 1e-4 * max(1.0, abs(loss)):
        bad.append("loss sn %.9g torch %.9g" % (report["loss"], loss))
    if len(rows) != len(y) or (rows[:, 1] != y).any():
        bad.append("labels differ")
    if (np.abs(rows[:, 3] - best.values.numpy()) > 1e-4).any():
        bad.append("probabilities differ by %g" % np.abs(rows[:, 3] - best.values.numpy()).max())
    ties = (prob.topk(2, 1).values[:, 0] - prob.topk(2, 1).values[:, 1]) < 1e-5
    if ((rows[:, 2] != best.indices.numpy()) & ~ties.numpy()).any():
        bad.append("predicted classes differ")
    print("torch loss %.9g, sn loss %.9g" % (loss, report["loss"]))
    if bad:
        sys.exit("; ".join(bad))


def cmd_check_sgd(a):
    """The step in float64: sn sums its batchnorm statistics and gradients
    in double, and torch's float32 sums can be the further from the exact
    step (2.8e-4 against sn's 1e-6 on the small ResNet's batchnorm biases)."""
    import torch
    net = TorchNet(a.w0)
    net.modules.double()
    x, y = normalised(a.data)
    net.modules.train()
    opt = torch.optim.SGD(net.modules.parameters(), lr=a.lr)
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(net.logits(torch.from_numpy(x).double()),
                                             torch.from_numpy(y))
    loss.backward()
    opt.step()
    w0, w1 = read_st(a.w0)[0], read_st(a.w1)[0]
    ref = net.state()
    bad = []
    for k, t in ref.items():
        s = w1[k].astype(np.float64)
        t = t.astype(np.float64)
        err = np.abs(s - t).max() / max(np.abs(t).max(), 1e-12)
        moved = np.abs(s - w0[k]).max()
        step_err = np.abs((s - w0[k]) - (t - w0[k])).max() / max(np.abs(t - w0[k]).max(), 1e-30)
        if err > 1e-4:
            bad.append("%s: relative difference %g" % (k, err))
        elif step_err > 1e-3:
            bad.append("%s: the update differs by %g relative" % (k, step_err))
        if k.endswith("weight") and moved == 0:
            bad.append("%s did not move" % k)
    print("torch loss before the step %.6f; %d tensors compared" % (loss.item(), len(ref)))
    if bad:
        sys.exit("; ".join(bad))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("out")
    d.add_argument("--fmnist", choices=["train", "t10k"])
    d.add_argument("--limit", type=int, default=2000)
    d.add_argument("--offset", type=int, default=0)
    d.add_argument("--random", type=int)
    d.add_argument("--shape", default="1,28,28")
    d.add_argument("--classes", type=int, default=10)
    d.add_argument("--label-max", type=int, default=0)
    d.add_argument("--dtype", choices=["u8", "f32"], default="u8")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--stats-from")
    s = sub.add_parser("same")
    s.add_argument("a")
    s.add_argument("b")
    m = sub.add_parser("meta")
    m.add_argument("file")
    m.add_argument("key")
    f = sub.add_parser("check-forward")
    for arg in ("weights", "data", "eval_json", "predictions"):
        f.add_argument(arg)
    g = sub.add_parser("check-sgd")
    for arg in ("w0", "data", "w1"):
        g.add_argument(arg)
    g.add_argument("lr", type=float)
    a = p.parse_args()
    if a.cmd == "data" and not a.fmnist and not a.random:
        p.error("data needs --fmnist or --random")
    {"data": cmd_data, "same": cmd_same, "meta": cmd_meta,
     "check-forward": cmd_check_forward, "check-sgd": cmd_check_sgd}[a.cmd](a)


if __name__ == "__main__":
    main()
