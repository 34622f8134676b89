#!/usr/bin/env python3
"""Nothing got slower: two builds of Tandem side by side in one run.

Runs each workload with the OLD and the NEW build's `tandem` (under that build's
`tandem-run`), alternating which goes first every round, and prints one JSON line
per run, then per workload the median samples/s of each build and the median of
the per-round ratios new/old. Rounds pair the two builds so a drift of the
machine's speed during the call moves both.

Usage: bench/compare_builds.py OLD_BUILD_DIR NEW_BUILD_DIR [--rounds R] [--only NAME,...]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

TRAIN = ["train", "--data", "synthetic-tokens", "--model", "gpt-mini", "--dataset-size", "4096",
         "--steps", "30", "--batch-size", "8", "--optimizer", "adamw", "--lr", "1e-3",
         "--log-every", "1000"]

WORKLOADS = {
    "bench-ddp-mlp": (None, ["bench", "ddp", "--model", "mlp", "--rounds", "1"]),
    "bench-ddp-resnet18": (None, ["bench", "ddp", "--model", "resnet18", "--rounds", "1"]),
    "train-gpt-mini-ddp": (2, TRAIN + ["--strategy", "ddp"]),
    "train-gpt-mini-zero2": (2, TRAIN + ["--strategy", "zero2"]),
    "train-gpt-mini-zero3": (2, TRAIN + ["--strategy", "zero3"]),
}


def samples_per_s(build, ranks, args):
    cmd = [os.path.join(build, "tools", "tandem")] + args
    if ranks:
        cmd = [os.path.join(build, "tools", "tandem-run"), "--nproc-per-node", str(ranks), "--"] + cmd
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if "samples_per_s_nranks" in rec:
                return rec["samples_per_s_nranks"]
    m = re.search(r"\(([0-9.]+) samples/s\)", out.stdout)
    if not m:
        sys.exit(f"no samples/s in the output of {' '.join(cmd)}:\n{out.stdout[-2000:]}")
    return float(m.group(1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", default="")
    a = p.parse_args()
    names = [n for n in WORKLOADS if not a.only or n in a.only.split(",")]
    results = {n: {"old": [], "new": [], "ratio": []} for n in names}
    for r in range(a.rounds):
        for name in names:
            ranks, args = WORKLOADS[name]
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            got = {}
            for which in order:
                got[which] = samples_per_s(a.old if which == "old" else a.new, ranks, args)
                print(json.dumps({"workload": name, "round": r, "build": which,
                                  "samples_per_s": got[which]}), flush=True)
            results[name]["old"].append(got["old"])
            results[name]["new"].append(got["new"])
            results[name]["ratio"].append(got["new"] / got["old"])
    for name in names:
        res = results[name]
        print(json.dumps({"workload": name, "rounds": a.rounds,
                          "old_median_samples_per_s": statistics.median(res["old"]),
                          "new_median_samples_per_s": statistics.median(res["new"]),
                          "median_ratio_new_over_old": round(statistics.median(res["ratio"]), 4),
                          "ratios": [round(x, 4) for x in res["ratio"]]}), flush=True)


if __name__ == "__main__":
    main()
