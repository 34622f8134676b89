#!/usr/bin/env python3
"""Turns `tandem bench comm --json` lines into the markdown tables of
docs/benchmarks.md: one table per (ranks, op), one busbw column per backend,
plus each backend's ratio to mpi-raw. Usage: bench/comm_table.py FILE.jsonl"""
import json
import sys
from collections import OrderedDict


def human(b):
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB" if b >= 1 << 10 else f"{b} B"


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    groups = OrderedDict()
    for r in rows:
        groups.setdefault((r["ranks"], r["op"]), []).append(r)
    for (ranks, op), rs in groups.items():
        backends = list(OrderedDict.fromkeys(r["backend"] for r in rs))
        sizes = sorted({r["bytes"] for r in rs})
        by = {(r["backend"], r["bytes"]): r for r in rs}
        raw = "mpi-raw" in backends
        print(f"\n**{op}, {ranks} ranks** (busbw GB/s" + (", x = ratio to mpi-raw)" if raw else ")"))
        print()
        head = ["size"] + backends + ([f"x {b}" for b in backends if b != "mpi-raw"] if raw else [])
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for s in sizes:
            cells = [human(s)]
            for b in backends:
                r = by.get((b, s))
                cells.append(f"{r['busbw_gbps']:.2f}" if r else "")
            if raw:
                for b in backends:
                    if b == "mpi-raw":
                        continue
                    r = by.get((b, s))
                    cells.append(f"{r['busbw_vs_mpi_raw']:.2f}" if r and "busbw_vs_mpi_raw" in r else "")
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
