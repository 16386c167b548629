#!/usr/bin/python3
"""The arithmetic of bench/study: rounds to target from sn-train's log.tsv,
the SparkNet speedup model, the K = 1 check, and the tables and report.

SparkNet's model (Moritz et al., ICLR 2016, section 4):
    serial time      = N1 * C
    SparkNet         = (tau * C + S) * M(K, tau)
    speedup          = N1 * C / ((tau * C + S) * M(K, tau))
    naive sync SGD   = C / (C / K + S)   (per step, N1 steps)
N1 is the steps one worker needs to reach the target, C seconds per sn-sgd
step, S seconds of communication per round (or per step for naive SGD, whose
step moves the same bytes as a SparkNet round), M the rounds to the target.

Standard library only, so Debian's /usr/bin/python3 runs it anywhere.
Subcommands (each prints to stdout):
    rounds LOG TARGET          rounds to the target (empty if not reached)
    speedup N1 C TAU M S       the model's speedup
    naive C K S                naive synchronous SGD's speedup
    crossover N1 C K TAU M     the S above which SparkNet beats naive SGD
    table RUNSDIR              study.tsv from the runs in RUNSDIR
    k1 RUNSDIR                 the K = 1 check: same steps, same accuracy?
    analyse OUT                speedup.tsv, plot data and report.md in OUT
"""
import glob
import json
import math
import os
import statistics
import struct
import sys

RATES_MBIT = (1, 10, 100)
STUDY_COLS = ("K", "tau", "outer", "target", "rounds", "steps_per_worker", "final_acc",
              "C_s", "wall_s", "bytes", "rounds_run", "stop", "overhead_s", "bytes_per_round",
              "bytes_how")


def read_tsv(path):
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    if not lines:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, l.split("\t"))) for l in lines[1:]]


def write_tsv(path, cols, rows):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            f.write("\t".join(fmt(r.get(c)) for c in cols) + "\n")
    os.replace(tmp, path)


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "%.6g" % v
    return str(v)


def num(s):
    return None if s in (None, "") else float(s)


# ---- the model ----------------------------------------------------------

def rounds_to_target(log, target):
    """The first round whose evaluated accuracy reaches the target, or None."""
    for row in log:
        acc = num(row.get("eval_acc"))
        if acc is not None and acc >= target:
            return int(row["round"])
    return None


def speedup(n1, c, tau, m, s):
    return n1 * c / ((tau * c + s) * m)


def naive_speedup(c, k, s):
    return c / (c / k + s)


def naive_crossover_s(n1, c, k, tau, m):
    """The S above which SparkNet (tau, M rounds) beats naive SGD with K
    workers: N1 (C/K + S) = (tau C + S) M solved for S.  None if never;
    0 if always."""
    a = n1 - m                 # coefficient of S
    b = tau * c * m - n1 * c / k
    if a <= 0:
        return None if b >= 0 else 0.0
    return max(0.0, b / a)


# ---- the runs -------------------------------------------------------------

def load_runs(runsdir):
    """Every run directory with a run.tsv (the driver's) and a log.tsv."""
    runs = []
    for conf in sorted(glob.glob(os.path.join(runsdir, "*", "run.tsv"))):
        d = os.path.dirname(conf)
        meta = read_tsv(conf)[0]
        log = read_tsv(os.path.join(d, "log.tsv")) if os.path.exists(os.path.join(d, "log.tsv")) else []
        runs.append({"dir": d, "meta": meta, "log": log,
                     "K": int(meta["K"]), "tau": int(meta["tau"]), "outer": meta["outer"],
                     "target": float(meta["target"])})
    runs.sort(key=lambda r: (r["K"], r["outer"] != "none", r["tau"]))
    return runs


def run_bytes(run):
    """Bytes per round, all workers, both ways: log.tsv's bytes_down and
    bytes_up where sn-train writes them, else the weight files handed over
    (one down and one up per worker, the driver's weights_bytes)."""
    log = run["log"]
    if log and "bytes_down" in log[0] and "bytes_up" in log[0]:
        per = [num(r["bytes_down"]) + num(r["bytes_up"]) for r in log
               if r.get("bytes_down") not in (None, "") and r.get("bytes_up") not in (None, "")]
        if per:
            return sum(per), statistics.mean(per), "log"
    wb = float(run["meta"]["weights_bytes"])
    per = 2 * run["K"] * wb
    return per * len(log), per, "files"


def study_row(run):
    log, tau = run["log"], run["tau"]
    m = rounds_to_target(log, run["target"])
    accs = [num(r["eval_acc"]) for r in log if num(r.get("eval_acc")) is not None]
    busy = sum(num(r["worker_mean_s"]) for r in log)
    total, per, how = run_bytes(run)
    over = [num(r["overhead_s"]) for r in log]
    return {
        "K": run["K"], "tau": tau, "outer": run["outer"], "target": run["target"],
        "rounds": m, "steps_per_worker": None if m is None else m * tau,
        "final_acc": accs[-1] if accs else None,
        "C_s": busy / (len(log) * tau) if log else None,
        "wall_s": num(run["meta"].get("wall_s")),
        "bytes": int(total), "rounds_run": len(log), "stop": run["meta"].get("stop", "target"),
        "overhead_s": statistics.median(over) if over else None,
        "bytes_per_round": int(per), "bytes_how": how,
    }


def k1_check(runs):
    """K = 1, plain averaging: one worker keeps its state across rounds, so
    its weights after s steps must not depend on tau.  For every pair of
    taus, compare the accuracy (and, where both weight files are kept, the
    tensors) at the steps both evaluated."""
    ones = [r for r in runs if r["K"] == 1 and r["outer"] == "none"]
    out = []
    for i, a in enumerate(ones):
        for b in ones[i + 1:]:
            acc_a = {int(r["round"]) * a["tau"]: num(r["eval_acc"]) for r in a["log"]}
            acc_b = {int(r["round"]) * b["tau"]: num(r["eval_acc"]) for r in b["log"]}
            common = sorted(s for s in acc_a if s in acc_b and acc_a[s] is not None and acc_b[s] is not None)
            diff = max((abs(acc_a[s] - acc_b[s]) for s in common), default=None)
            same = differ = 0
            for s in common:
                wa = os.path.join(a["dir"], "w-%04d.safetensors" % (s // a["tau"]))
                wb = os.path.join(b["dir"], "w-%04d.safetensors" % (s // b["tau"]))
                if os.path.exists(wa) and os.path.exists(wb):
                    if tensors(wa) == tensors(wb):
                        same += 1
                    else:
                        differ += 1
            out.append({"tau_a": a["tau"], "tau_b": b["tau"], "common_steps": len(common),
                        "max_acc_diff": diff, "weights_same": same, "weights_differ": differ,
                        "steps_a": None if rounds_to_target(a["log"], a["target"]) is None
                        else rounds_to_target(a["log"], a["target"]) * a["tau"],
                        "steps_b": None if rounds_to_target(b["log"], b["target"]) is None
                        else rounds_to_target(b["log"], b["target"]) * b["tau"]})
    return out


def tensors(path):
    """A weight file's tensors (name -> raw bytes), metadata left out: the
    metadata holds times that differ from run to run."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    head.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in head.items()}


def serial_steps(rows):
    """N1: the steps to target of the K = 1 plain run with the finest tau
    (its round is known to within tau steps)."""
    ones = [r for r in rows if r["K"] == 1 and r["outer"] == "none" and r["steps_per_worker"] is not None]
    if not ones:
        return None, None
    best = min(ones, key=lambda r: r["tau"])
    return best["steps_per_worker"], best["tau"]


# ---- communication time per round ---------------------------------------

def s_values(rows, links):
    """For each K: the S values studied, as (name, seconds, source).
    0; the local per-round overhead (median of log.tsv's overhead_s);
    per link rate and compression, the measured round-trip time from
    bench/links.sh's table where there is one, else bytes / rate."""
    by_k = {}
    for r in rows:
        by_k.setdefault(r["K"], []).append(r)
    out = {}
    for k, rs in sorted(by_k.items()):
        over = [r["overhead_s"] for r in rs if r["overhead_s"] is not None]
        plain = [r["bytes_per_round"] for r in rs if r["outer"] == "none"] or [r["bytes_per_round"] for r in rs]
        bpr = {"none": statistics.median(plain)}
        for c, b in links.get(("bytes", k), {}).items():
            bpr[c] = b
        vals = [("S0", 0.0, "-")]
        if over:
            vals.append(("local", statistics.median(over), "measured"))
        for rate in RATES_MBIT:
            for c in ("none", "int8"):
                meas = links.get(("round", k), {}).get((rate, c))
                if meas is not None:
                    vals.append(("%dMbit-%s" % (rate, c), meas, "measured"))
                elif c in bpr:
                    vals.append(("%dMbit-%s" % (rate, c), bpr[c] * 8 / (rate * 1e6), "computed"))
        out[k] = (vals, bpr)
    return out


def read_links(path):
    """links.tsv (bench/study's own, from bench/links.sh or int8 runs):
    kind K rate_mbit compress value.  kind 'round' is a measured
    communication time per round in seconds, 'bytes' bytes per round."""
    links = {}
    if not path or not os.path.exists(path):
        return links
    for r in read_tsv(path):
        k = int(r["K"])
        if r["kind"] == "round":
            links.setdefault(("round", k), {})[(int(float(r["rate_mbit"])), r["compress"])] = float(r["value"])
        elif r["kind"] == "bytes":
            links.setdefault(("bytes", k), {})[r["compress"]] = float(r["value"])
    return links


# ---- analyse: speedup.tsv, plot data, report ------------------------------

def analyse(out):
    meta = {}
    for line in open(os.path.join(out, "study.conf")):
        if "=" in line:
            key, _, v = line.rstrip("\n").partition("=")
            meta[key] = v
    c = float(meta["C_s"])
    rows = read_tsv(os.path.join(out, "study.tsv"))
    for r in rows:
        for key in ("K", "tau", "rounds", "steps_per_worker", "bytes_per_round", "rounds_run"):
            r[key] = None if r[key] == "" else int(r[key])
        for key in ("target", "final_acc", "C_s", "wall_s", "overhead_s"):
            r[key] = num(r[key])
    links = read_links(os.path.join(out, "links.tsv"))
    n1, n1_tau = serial_steps(rows)
    svals = s_values(rows, links)
    sp = []
    if n1 is not None:
        for r in rows:
            if r["rounds"] is None:
                continue
            for name, s, src in svals[r["K"]][0]:
                sp.append({"K": r["K"], "tau": r["tau"], "outer": r["outer"], "S": name, "S_s": s,
                           "S_how": src, "speedup": speedup(n1, c, r["tau"], r["rounds"], s),
                           "naive_speedup": naive_speedup(c, r["K"], s)})
    write_tsv(os.path.join(out, "speedup.tsv"),
              ("K", "tau", "outer", "S", "S_s", "S_how", "speedup", "naive_speedup"), sp)
    ans = answers(rows, sp, svals, n1, n1_tau, c, meta, out)
    plot_data(out, rows, svals, n1, c, ans)
    report(out, rows, sp, svals, n1, n1_tau, c, meta, ans)


def answers(rows, sp, svals, n1, n1_tau, c, meta, out):
    ans = {}
    runs = load_runs(os.path.join(out, "runs"))
    ans["k1"] = k1_check(runs)
    # 1. K = 4, tau = 50 against one worker that saw the same examples
    ek, et = int(meta.get("same_K", 4)), int(meta.get("same_tau", 50))
    long_k = [r for r in runs if r["K"] == ek and r["tau"] == et and r["outer"] == "none"]
    ref = [r for r in runs if r["K"] == 1 and r["outer"] == "none"]
    if long_k and ref:
        lk = long_k[0]
        steps1 = {}
        for r in ref:
            for row in r["log"]:
                if num(row.get("eval_acc")) is not None:
                    steps1[int(row["round"]) * r["tau"]] = num(row["eval_acc"])
        pairs = []
        for row in lk["log"]:
            s = int(row["round"]) * et * ek
            if num(row.get("eval_acc")) is not None and s in steps1:
                pairs.append((int(row["round"]), s, num(row["eval_acc"]), steps1[s]))
        ans["same"] = {"K": ek, "tau": et, "pairs": pairs}
    # 2. outer Nesterov against plain averaging, per K and tau
    cmp_ = []
    for r in rows:
        if r["outer"] != "nesterov":
            continue
        p = [q for q in rows if q["K"] == r["K"] and q["tau"] == r["tau"] and q["outer"] == "none"]
        if p:
            cmp_.append((r["K"], r["tau"], p[0]["rounds"], r["rounds"]))
    ans["outer"] = cmp_
    # 3. the best tau per K and link rate; the bandwidth below which SparkNet
    #    beats naive synchronous SGD
    best = {}
    for e in sp:
        key = (e["K"], e["S"])
        if key not in best or e["speedup"] > best[key]["speedup"]:
            best[key] = e
    ans["best"] = best
    cross = {}
    if n1 is not None:
        for k, (vals, bpr) in svals.items():
            if k == 1:
                continue
            cands = [r for r in rows if r["K"] == k and r["rounds"] is not None]
            if not cands:
                continue
            # the rate below which the best configuration beats naive SGD
            top = None
            for r in cands:
                s_star = naive_crossover_s(n1, c, k, r["tau"], r["rounds"])
                if s_star is None:
                    continue
                rate = math.inf if s_star == 0 else bpr["none"] * 8 / s_star / 1e6
                if top is None or rate > top[0]:
                    top = (rate, r["tau"], r["outer"], s_star)
            cross[k] = top
    ans["cross"] = cross
    return ans


def plot_data(out, rows, svals, n1, c, ans):
    """Data files for bench/study's gnuplot scripts, in OUT/plot/."""
    pd = os.path.join(out, "plot")
    os.makedirs(pd, exist_ok=True)
    ks = sorted({r["K"] for r in rows})
    taus = sorted({r["tau"] for r in rows})
    with open(os.path.join(pd, "map.dat"), "w") as f:
        # one block per outer: x index (tau), y index (K), speedup at S = 0
        for outer in ("none", "nesterov"):
            f.write("# %s\n" % outer)
            for r in rows:
                if r["outer"] != outer:
                    continue
                v = speedup(n1, c, r["tau"], r["rounds"], 0) if (n1 and r["rounds"]) else float("nan")
                f.write("%d %d %s %d %d\n" % (taus.index(r["tau"]), ks.index(r["K"]),
                                              "NaN" if math.isnan(v) else "%.3f" % v, r["tau"], r["K"]))
            f.write("\n\n")
    with open(os.path.join(pd, "axes.gp"), "w") as f:
        f.write("set xtics (%s)\n" % ", ".join('"%d" %d' % (t, i) for i, t in enumerate(taus)))
        f.write("set ytics (%s)\n" % ", ".join('"%d" %d' % (k, i) for i, k in enumerate(ks)))
        f.write("set xrange [-0.5:%g]\nset yrange [-0.5:%g]\n" % (len(taus) - 0.5, len(ks) - 0.5))
        # yellow at a speedup of 1: red below, green above
        top = max([speedup(n1, c, r["tau"], r["rounds"], 0) for r in rows if n1 and r["rounds"]] + [2.0])
        f.write("set cbrange [0:%g]\n" % top)
        f.write("set palette defined (0 '#d7301f', 1 '#ffffbf', %g '#1a9850')\n" % top)
    k = fixed_k(rows)
    grid = [10 ** (e / 10) for e in range(-50, 21)]   # 1e-5 .. 100 s
    with open(os.path.join(pd, "vs_s.dat"), "w") as f:
        for r in rows:
            if r["K"] != k or r["outer"] != "none" or r["rounds"] is None or not n1:
                continue
            f.write("# tau %d\n" % r["tau"])
            for s in grid:
                f.write("%g %g\n" % (s, speedup(n1, c, r["tau"], r["rounds"], s)))
            f.write("\n\n")
        f.write("# naive\n")
        for s in grid:
            f.write("%g %g\n" % (s, naive_speedup(c, k, s)))
    with open(os.path.join(pd, "vs_s.gp"), "w") as f:
        curves = [r["tau"] for r in rows if r["K"] == k and r["outer"] == "none" and r["rounds"] is not None and n1]
        f.write("set title 'K = %d: SparkNet (plain averaging, measured M) against naive synchronous SGD'\n" % k)
        for name, s, _ in svals.get(k, ([], {}))[0]:
            if s > 0 and "int8" not in name:
                f.write("set arrow from %g, graph 0 to %g, graph 1 nohead dt 3 lc rgb 'gray'\n" % (s, s))
                f.write("set label '%s' at %g, graph 0.97 rotate by 90 right font ',8'\n" % (name, s))
        f.write("plot " + ", ".join(
            ["'%s' index %d using 1:2 with lines lw 2 title 'SparkNet tau=%d'" % (
                os.path.join(pd, "vs_s.dat"), i, t) for i, t in enumerate(curves)] +
            ["'%s' index %d using 1:2 with lines lw 2 dt 2 lc rgb 'black' title 'naive sync SGD'" % (
                os.path.join(pd, "vs_s.dat"), len(curves))]) + "\n")
    # speedup against link rate, with S = bytes per round / rate
    bpr = svals.get(k, (None, {}))[1].get("none")
    rates = [10 ** (e / 10) for e in range(-10, 51)]   # 0.1 Mbit/s .. 100 Gbit/s
    with open(os.path.join(pd, "vs_rate.dat"), "w") as f:
        for r in rows:
            if r["K"] != k or r["outer"] != "none" or r["rounds"] is None or not n1 or not bpr:
                continue
            for rate in rates:
                f.write("%g %g\n" % (rate, speedup(n1, c, r["tau"], r["rounds"], bpr * 8 / (rate * 1e6))))
            f.write("\n\n")
        if bpr:
            for rate in rates:
                f.write("%g %g\n" % (rate, naive_speedup(c, k, bpr * 8 / (rate * 1e6))))
    with open(os.path.join(pd, "vs_rate.gp"), "w") as f:
        f.write("unset arrow\nunset label\nset title 'K = %d: speedup against link rate'\n" % k)
        curves = [r["tau"] for r in rows if r["K"] == k and r["outer"] == "none" and r["rounds"] is not None and n1]
        f.write("plot " + ", ".join(
            ["'%s' index %d using 1:2 with lines lw 2 title 'SparkNet tau=%d'" % (
                os.path.join(pd, "vs_rate.dat"), i, t) for i, t in enumerate(curves)] +
            ["'%s' index %d using 1:2 with lines lw 2 dt 2 lc rgb 'black' title 'naive sync SGD'" % (
                os.path.join(pd, "vs_rate.dat"), len(curves))]) + "\n")


def fixed_k(rows):
    """The K of the speedup-against-S plot: 4 if studied (the paper used 5),
    else the largest K."""
    ks = sorted({r["K"] for r in rows if r["K"] > 1}) or [1]
    return 4 if 4 in ks else ks[-1]


def report(out, rows, sp, svals, n1, n1_tau, c, meta, ans):
    L = []
    w = L.append
    w("# The SparkNet study: %s on Fashion-MNIST\n" % meta.get("net", "?"))
    w("Made by `bench/study %s` on %s (load average %s at the start, %s at the end; %s cores)." % (
        meta.get("preset", ""), meta.get("date", "?"), meta.get("load_start", "?"),
        meta.get("load_end", "?"), meta.get("cores", "?")))
    w("Target accuracy **%s** on a fixed %s-example subset of t10k (the first %s, sharded with "
      "`sn-shard --limit`), evaluated after every round; "
      "solver: the net's own (%s), lr policy fixed; batch %s; seed %s; stratified shards; "
      "K = 1 runs only with plain averaging. Outer Nesterov is DiLoCo's (lr 0.7, momentum 0.9).\n" % (
          meta.get("target"), meta.get("test_n"), meta.get("test_n"), meta.get("solver", "?"),
          meta.get("batch", "?"), meta.get("seed", "1")))
    w("C = **%.4g s** per sn-sgd step (batch %s, one thread, median of %s runs of %s steps, "
      "measured before the grid)." % (c, meta.get("batch"), meta.get("c_reps"), meta.get("c_iters")))
    if n1 is not None:
        w("N1 = **%d** steps (the K = 1 run with tau = %d reached the target at step %d).\n" % (n1, n1_tau, n1))
    else:
        w("N1: no K = 1 run reached the target, so no speedup can be computed.\n")
    short = in_short(sp, ans)
    if short:
        w("**In short.** " + " ".join(short) + "\n")
    w("## Runs (study.tsv)\n")
    w("| K | tau | outer | rounds | steps/worker | final acc | C_s | wall s | MB moved | overhead s/round |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w("| %d | %d | %s | %s | %s | %s | %s | %s | %.1f | %s |" % (
            r["K"], r["tau"], r["outer"], fmt(r["rounds"]) or "not reached",
            fmt(r["steps_per_worker"]), "%.4f" % r["final_acc"] if r["final_acc"] is not None else "",
            "%.4g" % r["C_s"] if r["C_s"] else "", "%.1f" % r["wall_s"] if r["wall_s"] else "",
            int(r["bytes"]) / 1e6 if r["bytes"] not in (None, "") else 0,
            "%.3f" % r["overhead_s"] if r["overhead_s"] is not None else ""))
    how = {r["bytes_how"] for r in rows}
    w("\nBytes: %s.\n" % ("log.tsv's bytes_down + bytes_up" if how == {"log"} else
                          "the weight files a round hands over (one down, one up per worker), since "
                          "this sn-train's log.tsv has no bytes_down/bytes_up" if how == {"files"} else
                          "log.tsv where it has bytes_down/bytes_up, else the weight files' sizes"))
    w("## K = 1: the harness check\n")
    w("One worker keeps its solver state across rounds, so its trajectory must not depend on tau.\n")
    if ans["k1"]:
        w("| tau | tau | steps both evaluated | max accuracy difference | weight files identical / differing | steps to target |")
        w("|---|---|---|---|---|---|")
        for e in ans["k1"]:
            w("| %d | %d | %d | %s | %d / %d | %s / %s |" % (
                e["tau_a"], e["tau_b"], e["common_steps"], fmt(e["max_acc_diff"]),
                e["weights_same"], e["weights_differ"], fmt(e["steps_a"]), fmt(e["steps_b"])))
        worst = max((e["max_acc_diff"] for e in ans["k1"] if e["max_acc_diff"] is not None), default=None)
        w("\nAcross every pair, the largest accuracy difference at a common step is %s%s. The steps to "
          "target differ only by where each tau's evaluations fall (a run evaluates every tau steps).\n" % (
              fmt(worst), " (identical trajectories)" if worst == 0 else ""))
    else:
        w("Fewer than two K = 1 runs: nothing to compare.\n")
    w("## Speedup (speedup.tsv)\n")
    w("speedup = N1 C / ((tau C + S) M); naive = C / (C/K + S). S per K:\n")
    w("| K | S | seconds | how | MB per round |")
    w("|---|---|---|---|---|")
    for k, (vals, bpr) in sorted(svals.items()):
        for name, s, src in vals:
            comp = name.split("-")[-1] if "Mbit" in name else "none"
            mb = bpr.get(comp)
            w("| %d | %s | %.4g | %s | %s |" % (k, name, s, src,
                                                "%.3f" % (mb / 1e6) if (mb and name != "S0") else ""))
    w("\nlocal: the median of log.tsv's overhead_s (a round's wall time less the workers' compute: "
      "GNU parallel, process starts, sn-average) over every round of every run with that K. "
      "Per link rate: 'computed' is the round's bytes (every worker's payload down, then up, "
      "all through the master's link) times 8 over the rate; 'measured' is one worker's round "
      "(its payload down, then up, over ssh) timed on a namespaced host behind a veth shaped by "
      "tc tbf at that rate (bench/study_links), times K, since every worker's bytes cross the "
      "master's link.\n")
    lm = os.path.join(out, "links-measured.tsv")
    if os.path.exists(lm):
        w("One worker's round over a shaped link, measured (payload each way; the ssh session's own "
          "start, timed empty, taken off):\n")
        w("| Mbit/s | compress | bytes each way | measured s | bytes x 2 x 8 / rate | measured / computed |")
        w("|---|---|---|---|---|---|")
        for e in read_tsv(lm):
            comp_s = 2 * float(e["bytes"]) * 8 / (float(e["rate_mbit"]) * 1e6)
            w("| %s | %s | %s | %.4g | %.4g | %.3f |" % (e["rate_mbit"], e["compress"], e["bytes"],
                                                       float(e["seconds"]), comp_s, float(e["seconds"]) / comp_s))
        w("")
    pl = os.path.join(out, "payload.tsv")
    if os.path.exists(pl):
        w("Payload per worker each way: " + ", ".join(
            "%s %s bytes" % tuple(l.split("\t")[:2]) for l in open(pl).read().split("\n") if l.strip()) +
          " (none: the weight file sn-train hands over; int8: sn-delta's int8 delta of this net).\n")
    names = [n for n, _, _ in next(iter(svals.values()))[0]] if svals else []
    if sp:
        w("| K | tau | outer | " + " | ".join(names) + " |")
        w("|---|---|---|" + "---|" * len(names))
        seen = []
        for e in sp:
            key = (e["K"], e["tau"], e["outer"])
            if key in seen:
                continue
            seen.append(key)
            cells = []
            for n in names:
                m = [x for x in sp if (x["K"], x["tau"], x["outer"]) == key and x["S"] == n]
                cells.append("%.3g" % m[0]["speedup"] if m else "")
            w("| %d | %d | %s | %s |" % (key + (" | ".join(cells),)))
        w("| naive | | | " + " | ".join(
            "/".join("%.3g" % naive_speedup(c, k, s) for k, (vals, _) in sorted(svals.items()) if k > 1
                     for nn, s, _ in vals if nn == n) for n in names) + " |")
        w("\n(naive row: K = %s, in that order)\n" % "/".join(str(k) for k in sorted(svals) if k > 1))
    w("## Plots\n")
    w("![speedup at S = 0](speedup_map.png)\n")
    w("![speedup against S](speedup_vs_s.png)\n")
    w("![speedup against link rate](speedup_vs_rate.png)\n")
    w("## What the study answers\n")
    same = ans.get("same")
    if same and same["pairs"]:
        rnd, s, a4, a1 = same["pairs"][-1]
        w("**K = %d, tau = %d against one worker that saw the same examples.** After %d rounds "
          "(K x tau x rounds = %d steps' worth of examples; one worker after %d steps) the average has "
          "%.2f%%, one worker %.2f%%: %s by %.2f points, %s 0.5 points." % (
              same["K"], same["tau"], rnd, s, s, 100 * a4, 100 * a1,
              "ahead" if a4 > a1 else "behind" if a4 < a1 else "level",
              100 * abs(a4 - a1), "within" if abs(a4 - a1) <= 0.005 else "not within"))
        last = same["pairs"][-3:]
        m4 = sum(p[2] for p in last) / len(last)
        m1 = sum(p[3] for p in last) / len(last)
        w("Over the last %d evaluations (which smooths the test subset's noise) the average has "
          "%.2f%%, one worker %.2f%%: %s by %.2f points, %s 0.5 points." % (
              len(last), 100 * m4, 100 * m1, "ahead" if m4 > m1 else "behind" if m4 < m1 else "level",
              100 * abs(m4 - m1), "within" if abs(m4 - m1) <= 0.005 else "not within"))
        w("At every round: " + ", ".join("r%d %.2f/%.2f" % (p[0], 100 * p[2], 100 * p[3]) for p in same["pairs"])
          + " (K = %d / one worker, %%).\n" % same["K"])
        ans["same_summary"] = (rnd, s, a4, a1, m4, m1, len(last))
    else:
        w("K = 4, tau = 50 against one worker: not in this grid.\n")
    if ans["outer"]:
        fewer = [(k, t) for k, t, a, b in ans["outer"] if b is not None and (a is None or b < a)]
        more = [(k, t) for k, t, a, b in ans["outer"] if a is not None and (b is None or b > a)]
        w("**Outer Nesterov against plain averaging** (rounds to target, plain / Nesterov): " +
          ", ".join("K%d tau%d %s/%s" % (k, t, fmt(a) or "-", fmt(b) or "-") for k, t, a, b in ans["outer"]) + ".")
        w("Nesterov needs fewer rounds at %s; more at %s.\n" % (
            ", ".join("K%d tau%d" % x for x in fewer) or "none", ", ".join("K%d tau%d" % x for x in more) or "none"))
    if ans["best"]:
        w("**Best tau per link rate** (largest model speedup over tau and outer, --compress none / int8):\n")
        w("| K | " + " | ".join("%d Mbit/s" % r for r in RATES_MBIT) + " | local | S = 0 |")
        w("|---|" + "---|" * (len(RATES_MBIT) + 2))
        for k in sorted({k for k, _ in ans["best"] if k > 1}):
            cells = []
            for rate in RATES_MBIT:
                parts = []
                for comp in ("none", "int8"):
                    b = ans["best"].get((k, "%dMbit-%s" % (rate, comp)))
                    parts.append("tau %d %s (%.3g)" % (b["tau"], b["outer"], b["speedup"]) if b else "-")
                cells.append(" / ".join(parts))
            for n in ("local", "S0"):
                b = ans["best"].get((k, n))
                cells.append("tau %d %s (%.3g)" % (b["tau"], b["outer"], b["speedup"]) if b else "-")
            w("| %d | %s |" % (k, " | ".join(cells)))
        w("")
    for k, top in sorted(ans["cross"].items()):
        if top is None:
            w("K = %d: SparkNet never beats naive synchronous SGD in this grid." % k)
        elif math.isinf(top[0]):
            w("K = %d: SparkNet (tau %d, %s) beats naive synchronous SGD at any bandwidth." % (k, top[1], top[2]))
        else:
            w("K = %d: SparkNet (tau %d, %s) beats naive synchronous SGD from %s down "
              "(S > %.3g s per round of %.2f MB, --compress none)." % (
                  k, top[1], top[2], rate_str(top[0]), top[3], svals[k][1]["none"] / 1e6))
    w("")
    with open(os.path.join(out, "report.md.tmp"), "w") as f:
        f.write("\n".join(L) + "\n")
    os.replace(os.path.join(out, "report.md.tmp"), os.path.join(out, "report.md"))


def in_short(sp, ans):
    """A few sentences: the best configuration at S = 0, locally and per link
    rate, and where SparkNet overtakes naive synchronous SGD."""
    out = []
    def best(name):
        c = [e for e in sp if e["S"] == name and e["K"] > 1]
        return max(c, key=lambda e: e["speedup"]) if c else None
    b = best("S0")
    if b:
        out.append("With free communication (S = 0) the best run is K = %d, tau = %d (%s): %.2fx one worker." % (
            b["K"], b["tau"], b["outer"], b["speedup"]))
    for name, what in (("local", "this machine's own per-round overhead"),
                       ("100Mbit-none", "100 Mbit/s"), ("10Mbit-none", "10 Mbit/s"), ("1Mbit-none", "1 Mbit/s")):
        b = best(name)
        if b:
            out.append("At %s (S = %.3g s) it is K = %d, tau = %d (%s): %.3gx, against %.3gx for naive "
                       "synchronous SGD with the same K." % (what, b["S_s"], b["K"], b["tau"], b["outer"],
                                                              b["speedup"], b["naive_speedup"]))
    slow = [e for e in sp if e["S"] != "S0" and e["K"] > 1]
    if slow and max(e["speedup"] for e in slow) < 1:
        out.append("Every configuration is slower than one worker once rounds cost real time: a step of "
                   "this net is too cheap for what a round moves.")
    cr = [(k, t) for k, t in ans.get("cross", {}).items() if t]
    if cr:
        out.append("SparkNet beats naive synchronous SGD below " + ", ".join(
            "%s (K = %d)" % ("any rate" if math.isinf(t[0]) else rate_str(t[0]), k) for k, t in sorted(cr)) + ".")
    return out


def rate_str(mbit):
    if mbit >= 1000:
        return "%.3g Gbit/s" % (mbit / 1000)
    return "%.3g Mbit/s" % mbit


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    cmd, a = argv[1], argv[2:]
    try:
        if cmd == "rounds" and len(a) == 2:
            print(fmt(rounds_to_target(read_tsv(a[0]), float(a[1]))))
        elif cmd == "speedup" and len(a) == 5:
            print("%.6g" % speedup(float(a[0]), float(a[1]), float(a[2]), float(a[3]), float(a[4])))
        elif cmd == "naive" and len(a) == 3:
            print("%.6g" % naive_speedup(float(a[0]), float(a[1]), float(a[2])))
        elif cmd == "crossover" and len(a) == 5:
            v = naive_crossover_s(float(a[0]), float(a[1]), float(a[2]), float(a[3]), float(a[4]))
            print("never" if v is None else "%.6g" % v)
        elif cmd == "table" and len(a) == 1:
            rows = [study_row(r) for r in load_runs(a[0])]
            sys.stdout.write("\t".join(STUDY_COLS) + "\n")
            for r in rows:
                sys.stdout.write("\t".join(fmt(r[c]) for c in STUDY_COLS) + "\n")
        elif cmd == "k1" and len(a) == 1:
            cols = ("tau_a", "tau_b", "common_steps", "max_acc_diff", "weights_same", "weights_differ",
                    "steps_a", "steps_b")
            sys.stdout.write("\t".join(cols) + "\n")
            for e in k1_check(load_runs(a[0])):
                sys.stdout.write("\t".join(fmt(e[c]) for c in cols) + "\n")
        elif cmd == "analyse" and len(a) == 1:
            analyse(a[0])
        else:
            sys.stderr.write("study_model: usage error (see --help)\n")
            return 2
    except (OSError, ValueError, KeyError, IndexError, ZeroDivisionError) as e:
        sys.stderr.write("study_model: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
