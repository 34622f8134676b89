#!/usr/bin/python3
"""PyTorch's own DistributedDataParallel (Python, Gloo) on the job that
`tandem bench ddp` times, so the two can be compared in one session.

It mirrors tools/tandem/bench_ddp.cpp step for step: the same model (the zoo's
MLP or CIFAR ResNet-18, built layer for layer like src/train/models/), random
inputs and labels of the same shapes, cross-entropy, SGD (lr 0.01, momentum
0.9), `--warmup` untimed steps, a barrier, then `--steps` timed steps; the
N-rank figure is the slowest rank's mean step time. The one-process baseline
runs the same loop without DDP. Every process gets one intra-op thread and one
BLAS thread.

Prints one JSON line like tandem bench ddp's (without the exposed-comm field).
Needs Debian's python3-torch (`apt-get install python3-torch`).
Usage: bench/pytorch_ddp.py [--model mlp|resnet18] [--mlp-hidden 1024,1024,1024,1024]
                            [--ranks N] [--batch-size B] [--steps S] [--warmup W]
                            [--grad-as-bucket-view]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mlp", choices=["mlp", "resnet18"])
    p.add_argument("--mlp-hidden", default="256,256",
                   help="hidden widths of the MLP, comma-separated (the zoo's default 256,256)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--grad-as-bucket-view", action="store_true",
                   help="DDP(gradient_as_bucket_view=True), as tandem bench ddp runs by default")
    p.add_argument("--as-rank", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--as-single", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.ranks < 1 or a.batch_size < 1 or a.steps < 1 or a.warmup < 0:
        p.error("--ranks, --batch-size and --steps must be >= 1, --warmup >= 0")
    return a


def build_model(torch, args):
    nn = torch.nn
    if args.model == "mlp":
        widths = [784] + [int(w) for w in args.mlp_hidden.split(",") if w] + [10]
        layers = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i + 2 < len(widths):
                layers.append(nn.ReLU())
        return nn.Sequential(*layers), (784,)

    def conv(cin, cout, k, stride):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)

    class BasicBlock(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1, self.norm1 = conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
            self.conv2, self.norm2 = conv(planes, planes, 3, 1), nn.BatchNorm2d(planes)
            self.shortcut = None
            if stride != 1 or cin != planes:
                self.shortcut = nn.Sequential(conv(cin, planes, 1, stride), nn.BatchNorm2d(planes))

        def forward(self, x):
            out = self.norm1(self.conv1(x)).relu()
            out = self.norm2(self.conv2(out))
            return (out + (self.shortcut(x) if self.shortcut is not None else x)).relu()

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem_conv, self.stem_norm = conv(3, 64, 3, 1), nn.BatchNorm2d(64)
            blocks, cin = [], 64
            for stage in range(4):
                planes = 64 << stage
                for b in range(2):
                    blocks.append(BasicBlock(cin, planes, 2 if stage > 0 and b == 0 else 1))
                    cin = planes
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(cin, 10)

        def forward(self, x):
            x = self.stem_norm(self.stem_conv(x)).relu()
            return self.head(self.blocks(x).mean((2, 3)))

    return ResNet18(), (3, 32, 32)


def run_steps(args, distributed):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, sample_shape = build_model(torch, args)
    rank = 0
    if distributed:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        model = torch.nn.parallel.DistributedDataParallel(
            model, gradient_as_bucket_view=args.grad_as_bucket_view)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.manual_seed(rank + 1)
    x = torch.randn((args.batch_size,) + sample_shape)
    y = torch.randint(0, 10, (args.batch_size,))
    start = 0.0
    for s in range(args.warmup + args.steps):
        if s == args.warmup:
            if distributed:
                dist.barrier()
            start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    step = torch.tensor([(time.perf_counter() - start) / args.steps], dtype=torch.float64)
    if distributed:
        dist.all_reduce(step, op=dist.ReduceOp.MAX)
        dist.destroy_process_group()
    if rank == 0:
        print(f"{step.item():.9f}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_children(args, ranks, timeout_s=600):
    """Runs `ranks` DDP processes (0: one process without DDP) and returns the
    step time rank 0 prints. Kills every child on failure or timeout."""
    single = ranks == 0
    n = 1 if single else ranks
    port = free_port()
    argv = [sys.executable, os.path.abspath(__file__), "--model", args.model,
            "--mlp-hidden", args.mlp_hidden, "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--as-single" if single else "--as-rank"]
    if args.grad_as_bucket_view:
        argv.append("--grad-as-bucket-view")
    procs = []
    for r in range(n):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout_s
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outs.append(out)
            if p.returncode != 0:
                raise RuntimeError(f"pytorch_ddp: a {'one-process' if single else f'{n}-rank'} "
                                   f"child exited with {p.returncode} (its errors are above)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return float(outs[0].split()[0])


def main(argv):
    args = parse_args(argv)
    if args.as_rank or args.as_single:
        run_steps(args, distributed=args.as_rank)
        return 0
    n_step = run_children(args, args.ranks)
    one_step = run_children(args, 0)
    one_sps = args.batch_size / one_step
    n_sps = args.batch_size * args.ranks / n_step
    print(json.dumps({
        "bench": "pytorch_ddp", "model": args.model, "mlp_hidden": args.mlp_hidden,
        "ranks": args.ranks, "batch_per_rank": args.batch_size, "steps": args.steps,
        "gradient_as_bucket_view": args.grad_as_bucket_view,
        "samples_per_s_1proc": one_sps, "samples_per_s_nranks": n_sps,
        "scaling_efficiency": n_sps / (args.ranks * one_sps),
        "step_ms_1proc": one_step * 1e3, "step_ms_nranks": n_step * 1e3}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
