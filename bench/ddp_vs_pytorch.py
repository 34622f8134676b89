#!/usr/bin/python3
"""Tandem's DDP beside PyTorch's own (Python, Gloo), in one session.

For each job (the CIFAR ResNet-18 at batch 32 per rank, and a 784-1024x4-10 MLP
at batch 64 per rank, by default), every round runs `tandem bench ddp` and
bench/pytorch_ddp.py back to back, alternating which goes first, so both see
the same machine state. Each run times one process and N ranks, every
process with one intra-op thread and one BLAS thread; both sides use 25 MiB
buckets and gradient_as_bucket_view (Tandem's trainer default). Tandem's side
also times N processes training at once without communication: the most
any synchronous method can reach on this machine. Prints one JSON line
per run, then one summary JSON line per job (medians over the rounds, and
Tandem's N-rank samples/s over PyTorch's), then a Markdown table.

Usage: bench/ddp_vs_pytorch.py BUILD_DIR [--rounds R] [--ranks N] [--jobs resnet18,mlp]
Needs Debian's python3-torch for the PyTorch side.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (model, batch per rank, timed steps, extra tandem/pytorch flags)
JOBS = {
    "resnet18": ("resnet18", 32, 8, []),
    "mlp": ("mlp", 64, 60, ["--mlp-hidden", "1024,1024,1024,1024"]),
    "mlp-small": ("mlp", 32, 200, []),
}


def run_json(argv, env=None, timeout_s=900):
    out = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=timeout_s, check=True,
                         env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON line from {' '.join(argv)}")
    return json.loads(lines[-1])


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("build_dir")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--jobs", default="resnet18,mlp", help=",".join(JOBS))
    p.add_argument("--pytorch-keep-freed-memory", action="store_true",
                   help="also run PyTorch with glibc's malloc tuned as the tandem tool tunes "
                        "its own (GLIBC_TUNABLES; see include/tandem/memory/malloc_tuning.h)")
    a = p.parse_args(argv)
    tandem = os.path.join(a.build_dir, "tools", "tandem")
    if not os.access(tandem, os.X_OK):
        p.error(f"{tandem} is not an executable; build first (make build)")
    try:
        import torch  # noqa: F401
    except ImportError:
        p.error("PyTorch is missing: apt-get install python3-torch")
    jobs = [j for j in a.jobs.split(",") if j]
    for j in jobs:
        if j not in JOBS:
            p.error(f"unknown job '{j}'; known: {', '.join(JOBS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    sides_run = ["tandem", "pytorch"] + (["pytorch+keep"] if a.pytorch_keep_freed_memory else [])
    results = {j: {side: [] for side in sides_run} for j in jobs}
    tuned = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=33554432:"
                 "glibc.malloc.trim_threshold=1073741824")
    for r in range(a.rounds):
        for j in jobs:
            model, batch, steps, extra = JOBS[j]
            common = ["--model", model, "--ranks", str(a.ranks), "--batch-size", str(batch),
                      "--steps", str(steps), "--warmup", "3"] + extra
            py = [sys.executable, os.path.join(HERE, "pytorch_ddp.py")] + common + \
                ["--grad-as-bucket-view"]
            sides = [("tandem", [tandem, "bench", "ddp"] + common, None), ("pytorch", py, None)]
            if a.pytorch_keep_freed_memory:
                sides.append(("pytorch+keep", py, tuned))
            sides = sides[r % len(sides):] + sides[:r % len(sides)]
            for side, cmd, env in sides:
                res = run_json(cmd, env)
                res.update({"job": j, "side": side, "round": r})
                print(json.dumps(res), flush=True)
                results[j][side].append(res)

    rows = []
    for j in jobs:
        med = {side: {k: statistics.median(x[k] for x in runs)
                      for k in ("samples_per_s_1proc", "samples_per_s_nranks",
                                "scaling_efficiency")}
               for side, runs in results[j].items()}
        med["tandem"]["efficiency_without_comm"] = statistics.median(
            x["efficiency_without_comm"] for x in results[j]["tandem"])
        summary = {"bench": "ddp_vs_pytorch", "job": j, "ranks": a.ranks, "rounds": a.rounds,
                   **med,
                   "nranks_samples_per_s_ratio": med["tandem"]["samples_per_s_nranks"] /
                   med["pytorch"]["samples_per_s_nranks"],
                   "tandem_exposed_comm_ms": statistics.median(
                       x["exposed_comm_ms_per_step"] for x in results[j]["tandem"])}
        print(json.dumps(summary), flush=True)
        rows.append(summary)

    print(f"\n| job | side | 1 proc samples/s | {a.ranks} ranks samples/s | scaling efficiency |")
    print("|---|---|---|---|---|")
    for s in rows:
        for side in sides_run:
            m = s[side]
            print(f"| {s['job']} | {side} | {m['samples_per_s_1proc']:.1f} | "
                  f"{m['samples_per_s_nranks']:.1f} | {m['scaling_efficiency']:.3f} |")
    for s in rows:
        print(f"{s['job']}: Tandem's {a.ranks}-rank samples/s is "
              f"{s['nranks_samples_per_s_ratio']:.2f}x PyTorch's; {a.ranks} processes without "
              f"communication reach efficiency {s['tandem']['efficiency_without_comm']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
