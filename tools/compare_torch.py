#!/usr/bin/env python3
"""Side by side with PyTorch on the same GPU.

For each shape, runs `hopfield-gpu bench --json` (our median kernel time, GPU
timestamps) and PyTorch's `torch.nn.functional.scaled_dot_product_attention`
in f32 with the same beta as its scale (keys = values = memories), timed with
CUDA events after warm-up, and prints both medians and their ratio.

Then top-K retrieval (K = 32, L = 1024, M = 10^6, d = 64): ours
(`bench --method topk --k 32`) beside the PyTorch pipeline
matmul -> topk -> softmax over the K kept scores -> gather -> weighted sum,
which writes the L x M score matrix that our fused kernel never forms.

    python3 tools/compare_torch.py [--bin target/release/hopfield-gpu] [--repeats 10]
        [--shapes gpu|small] [--jsonl FILE]

TF32: off for both PyTorch timings (`torch.backends.cuda.matmul.allow_tf32`
and `cudnn.allow_tf32` False: plain f32, like our kernels); each record says
so (`torch_tf32`). `--jsonl` appends one JSON record per comparison.

Needs a CUDA GPU with PyTorch, and a Vulkan driver for hopfield-gpu. Where
PyTorch or CUDA is missing, the PyTorch part is skipped and says so (our
side still runs). Times are medians of `--repeats` runs; the ratio is
torch / ours (> 1: we are faster).
"""

import argparse
import json
import math
import statistics
import subprocess
import sys

# (d, M, L): the issue's targets and the default-suite shapes.
SHAPES = {
    "gpu": [
        (64, 4096, 4096),
        (64, 16384, 16384),
        (64, 4_000_000, 1),
        (64, 1_000_000, 1024),
        (784, 8192, 1024),
    ],
    # A smoke test on any device (lavapipe included).
    "small": [(64, 1024, 1024), (128, 65_536, 1)],
}


# (d, M, L, K) for the top-K comparison (the issue's target shape).
TOPK_SHAPES = {"gpu": [(64, 1_000_000, 1024, 32)], "small": [(64, 1024, 1024, 32)]}


def torch_cuda():
    """(available, why not)."""
    try:
        import torch
    except ImportError as e:
        return False, f"PyTorch is not installed ({e})"
    if not torch.cuda.is_available():
        return False, f"PyTorch {torch.__version__} sees no CUDA device"
    return True, ""


def ours(binary, d, m, l, repeats, extra=("--method", "dense")):
    out = subprocess.run(
        [binary, "bench", "--json", *extra, "--d", str(d), "--m", str(m), "--l", str(l),
         "--repeats", str(repeats)],
        check=True, capture_output=True, text=True,
    ).stdout
    report = json.loads(out)
    return report["device"]["name"], report["records"][0]


def torch_sdpa(d, m, l, repeats, beta):
    import torch

    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(1, 1, l, d, device="cuda", generator=gen) * 2 - 1
    xi = torch.rand(1, 1, m, d, device="cuda", generator=gen) * 2 - 1
    # Plain f32 matmuls: no TF32, to compare like with like.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    f = lambda: torch.nn.functional.scaled_dot_product_attention(x, xi, xi, scale=beta)
    return time_cuda(f, repeats), torch.cuda.get_device_name()


def time_cuda(f, repeats):
    import torch

    for _ in range(3):
        f()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        f()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def torch_topk(d, m, l, k, repeats, beta):
    """Sparse-structured top-K retrieval, eq. (3.9): softmax over the K kept
    scores only (no zero-logit fill), weighted sum of their value rows."""
    import torch

    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(l, d, device="cuda", generator=gen) * 2 - 1
    xi = torch.rand(m, d, device="cuda", generator=gen) * 2 - 1
    torch.backends.cuda.matmul.allow_tf32 = False

    def f():
        s = (x @ xi.T) * beta                      # [L, M], written to memory
        top, idx = torch.topk(s, k, dim=1)         # [L, K]
        w = torch.softmax(top, dim=1)              # over the K kept scores only
        return torch.einsum("lk,lkd->ld", w, xi[idx])  # gather [L, K, d], weighted sum

    return time_cuda(f, repeats), torch.cuda.get_device_name()


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/hopfield-gpu")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--shapes", choices=sorted(SHAPES), default="gpu")
    ap.add_argument("--jsonl", help="append one JSON record per comparison to this file")
    args = ap.parse_args()
    have_torch, why = torch_cuda()
    if not have_torch:
        print(f"PyTorch part SKIPPED: {why}; timing ours only", flush=True)

    def emit(record):
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")

    print(f"{'d':>5} {'M':>9} {'L':>6} {'ours ms':>10} {'torch ms':>10} {'torch/ours':>11} {'ours TFLOP/s':>13} {'ours GB/s':>10}")
    device = torch_device = None
    for d, m, l in SHAPES[args.shapes]:
        beta = 1 / math.sqrt(d)
        try:
            device, rec = ours(args.bin, d, m, l, args.repeats)
        except subprocess.CalledProcessError as e:
            print(f"{d:>5} {m:>9} {l:>6}  hopfield-gpu failed: {e.stderr.strip()}", file=sys.stderr)
            continue
        t_ms = None
        if have_torch:
            t_ms, torch_device = torch_sdpa(d, m, l, args.repeats, beta)
        ratio = None if t_ms is None else t_ms / rec["median_ms"]
        print(f"{d:>5} {m:>9} {l:>6} {rec['median_ms']:>10.3f} {fmt(t_ms, '>10.3f')} {fmt(ratio, '>11.2f')} "
              f"{rec['gflops'] / 1e3:>13.2f} {rec['gbps']:>10.1f}", flush=True)
        emit({"step": "compare-dense", "d": d, "m": m, "l": l, "ours_device": device, "ours": rec,
              "torch": "scaled_dot_product_attention f32", "torch_device": torch_device, "torch_tf32": False,
              "torch_ms": t_ms, "torch_over_ours": ratio, "torch_skipped": None if have_torch else why})
    print(f"ours on: {device}; torch on: {torch_device or 'skipped'} (TF32 off)")

    print()
    print(f"{'d':>5} {'M':>9} {'L':>6} {'K':>5} {'ours topk ms':>13} {'torch topk ms':>14} {'torch/ours':>11}")
    for d, m, l, k in TOPK_SHAPES[args.shapes]:
        beta = 1 / math.sqrt(d)
        try:
            device, rec = ours(args.bin, d, m, l, args.repeats, ("--method", "topk", "--k", str(k)))
        except subprocess.CalledProcessError as e:
            print(f"{d:>5} {m:>9} {l:>6} {k:>5}  hopfield-gpu failed: {e.stderr.strip()}", file=sys.stderr)
            continue
        t_ms = None
        if have_torch:
            t_ms, torch_device = torch_topk(d, m, l, k, args.repeats, beta)
        ratio = None if t_ms is None else t_ms / rec["median_ms"]
        print(f"{d:>5} {m:>9} {l:>6} {k:>5} {rec['median_ms']:>13.3f} {fmt(t_ms, '>14.3f')} {fmt(ratio, '>11.2f')}",
              flush=True)
        emit({"step": "compare-topk", "d": d, "m": m, "l": l, "k": k, "ours_device": device, "ours": rec,
              "torch": "matmul + topk + softmax + gather f32", "torch_device": torch_device, "torch_tf32": False,
              "torch_ms": t_ms, "torch_over_ours": ratio, "torch_skipped": None if have_torch else why})


if __name__ == "__main__":
    main()
