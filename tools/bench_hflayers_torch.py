"""Time hopfield-layers modules in PyTorch at the shapes `hopfield-gpu bench
--layer` times, so that the two come from one machine and one run.

  pooling:  HopfieldPooling(input_size=64, num_heads=4) over 1024 bags of
            64 instances, input [1024, 64, 64] (batch first);
  hopfield: Hopfield(input_size=256, num_heads=8) self-association on 16
            sequences of 1024 tokens, stored = state = projection = [16, 1024, 256].

Both in eval mode under torch.no_grad(), hflayers' defaults otherwise (the
input LayerNorms on, update_steps_max 0), float32, random weights and inputs
(seeded). Each is warmed up once, then timed `--repeats` times; the median
is printed (ms), with the device and the thread count. On a GPU the timed
region ends with torch.cuda.synchronize().

Run (PyTorch from PyPI; the hflayers code is never copied into this repository):

    git clone https://github.com/ml-jku/hopfield-layers /tmp/hflayers   # commit f56f929
    PYTHONPATH=/tmp/hflayers /work/venv-torch/bin/python tools/bench_hflayers_torch.py
    PYTHONPATH=/tmp/hflayers python tools/bench_hflayers_torch.py --device cuda --json

A small run to check the script (the shape flags override the issue's shapes):

    PYTHONPATH=/tmp/hflayers /work/venv-torch/bin/python tools/bench_hflayers_torch.py \
        --sequences 4 --rows 16 --input-size 16 --heads 2 --repeats 2

Compare with (same machine, quiet):

    hopfield-gpu bench --layer pooling
    hopfield-gpu bench --layer hopfield
"""

import argparse
import json
import platform
import statistics
import time

import torch

from hflayers import Hopfield, HopfieldPooling

SHAPES = {
    "pooling": dict(n=1024, s=64, features=64, heads=4),
    "hopfield": dict(n=16, s=1024, features=256, heads=8),
}


def module(kind, features, heads):
    if kind == "pooling":
        return HopfieldPooling(input_size=features, num_heads=heads)
    return Hopfield(input_size=features, num_heads=heads)


def run(kind, device, repeats, threads, overrides):
    # The issue's shapes unless overridden (as `bench --layer`'s
    # --sequences/--rows/--input-size/--heads), e.g. to check a small run.
    shape = {**SHAPES[kind], **{k: v for k, v in overrides.items() if v is not None}}
    torch.manual_seed(7)
    m = module(kind, shape["features"], shape["heads"]).to(device).eval()
    x = torch.rand(shape["n"], shape["s"], shape["features"], device=device) * 2 - 1

    def forward():
        with torch.no_grad():
            if kind == "pooling":
                y = m(x)
            else:
                y = m((x, x, x))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return y

    forward()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t)
    return {
        "layer": "HopfieldPooling" if kind == "pooling" else "Hopfield",
        **shape,
        "device": device if device == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": threads,
        "torch": torch.__version__,
        "repeats": repeats,
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", choices=sorted(SHAPES), action="append", help="default: both")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's own choice)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--sequences", type=int, help="sequences (bags); default: the issue's shape")
    p.add_argument("--rows", type=int, help="rows per sequence (instances, tokens)")
    p.add_argument("--input-size", type=int, help="the module's input_size")
    p.add_argument("--heads", type=int, help="the module's num_heads")
    a = p.parse_args()
    overrides = dict(n=a.sequences, s=a.rows, features=a.input_size, heads=a.heads)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    records = [run(kind, a.device, a.repeats, threads, overrides) for kind in (a.layer or ["pooling", "hopfield"])]
    if a.json:
        print(json.dumps(records, indent=1))
        return
    for r in records:
        print(
            f"{r['layer']:<16} N={r['n']:<5} S={r['s']:<5} F={r['features']:<4} heads={r['heads']:<2} "
            f"{r['device']} ({r['threads']} threads, torch {r['torch']}): "
            f"median {r['median_ms']:.1f} ms, min {r['min_ms']:.1f} ms over {r['repeats']}"
        )


if __name__ == "__main__":
    main()
