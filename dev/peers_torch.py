#!/usr/bin/env python3
"""dev/peers_torch.py: what a user would pick instead of llmq's kernels, timed on the same shapes.

`make gpucheck` runs it where PyTorch with CUDA is installed. For each op of the dev/*.cu benchmarks it times
PyTorch's own implementation (eager, and torch.compile where that fuses the op) on the same shapes and prints
the same SUMMARY lines (bench|case|ms|achieved|of peak), with the case named "torch ..." so the gpucheck table
shows llmq's versions and PyTorch's side by side. Ceilings are measured here, in the same run, the same way as
dev/dev_cuda.h does: a 1 GiB device-to-device copy (bytes read + written) and an 8192^3 bf16 matmul.

Timing: CUDA events around each call, median of 20 after 3 warm-ups (dev/dev_cuda.h's median_ms).
"""
import math
import sys

import torch
import torch.nn.functional as F

dev = torch.device("cuda")
bf16 = torch.bfloat16
N_ROWS = 8192  # B*T of the kernels' benchmarks


def median_ms(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[reps // 2]


def copy_gbs():
    a = torch.empty(1 << 30, dtype=torch.uint8, device=dev).fill_(0xFF)
    b = torch.empty_like(a)
    ms = median_ms(lambda: b.copy_(a), reps=10)
    return 2.0 * a.numel() / (ms * 1e-3) / 1e9


def bf16_tflops():
    n = 8192
    a = torch.rand(n, n, device=dev, dtype=bf16) * 2 - 1
    b = torch.rand(n, n, device=dev, dtype=bf16) * 2 - 1
    ms = median_ms(lambda: a @ b, reps=10)
    return 2.0 * n ** 3 / (ms * 1e-3) / 1e12


def summary(bench, case, ms, achieved, peak, unit):
    print(f"SUMMARY|{bench}|{case}|{ms:.4f} ms|{achieved:.1f} {unit}|{100 * achieved / peak:.1f}% of {peak:.0f} {unit}",
          flush=True)


def randn(*shape, scale=1.0):
    return torch.randn(*shape, device=dev, dtype=torch.float32).mul_(scale).to(bf16)


def variants(fn):
    """eager, and torch.compile'd when it compiles here (it needs a working Triton)"""
    out = [("torch", fn)]
    try:
        compiled = torch.compile(fn)
        compiled()
        out.append(("torch.compile", compiled))
    except Exception as e:  # noqa: BLE001 - report and carry on with eager only
        print(f"torch.compile unavailable for {fn.__name__}: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
    return out


def bench_swiglu(gbs):
    for model, f in [("60m", 1376), ("350m", 2736), ("1b", 5461), ("7b", 11008)]:
        n = N_ROWS * f
        gate, up = randn(n, scale=2.0).requires_grad_(), randn(n).requires_grad_()
        dout = randn(n)

        def forward():
            return F.silu(gate) * up

        def backward():
            return torch.autograd.grad(F.silu(gate) * up, (gate, up), dout)

        for name, fn in variants(forward):
            ms = median_ms(fn)
            summary("swiglu_forward", f"{name} {model}", ms, 3.0 * n * 2 / (ms * 1e-3) / 1e9, gbs, "GB/s")
        # autograd's time includes recomputing the forward: what a PyTorch user pays for the backward
        ms = median_ms(backward)
        summary("swiglu_backward", f"torch fwd+bwd {model}", ms, 5.0 * n * 2 / (ms * 1e-3) / 1e9, gbs, "GB/s")


def bench_rmsnorm(gbs):
    for model, c in [("60m", 512), ("350m", 1024), ("1b", 2048), ("7b", 4096)]:
        x, w = randn(N_ROWS, c), randn(c)
        for name, fn in variants(lambda: F.rms_norm(x, (c,), w, 1e-5)):
            ms = median_ms(fn)
            summary("rmsnorm_forward", f"{name} {model}", ms, 2.0 * N_ROWS * c * 2 / (ms * 1e-3) / 1e9, gbs, "GB/s")


def bench_crossentropy(gbs):
    n = 4096
    for v in [32000, 50257, 128256]:
        logits = randn(n, v).requires_grad_()
        targets = torch.randint(0, v, (n,), device=dev)

        def fwd_bwd():
            return torch.autograd.grad(F.cross_entropy(logits.float(), targets), logits)

        ms = median_ms(fwd_bwd)
        summary("crossentropy", f"torch fwd+bwd V={v}", ms, 2.0 * n * v * 2 / (ms * 1e-3) / 1e9, gbs, "GB/s")


def bench_attention(tflops):
    for (b, t) in [(8, 1024), (2, 4096)]:
        for nh, nkv, hd in [(16, 16, 64), (32, 8, 128)]:
            q = randn(b, nh, t, hd).requires_grad_()
            k, v = randn(b, nkv, t, hd).requires_grad_(), randn(b, nkv, t, hd).requires_grad_()
            gqa = {"enable_gqa": True} if nkv != nh else {}
            flops = 4.0 * b * nh * t * t * hd / 2

            def forward():
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)

            out = forward()
            dout = torch.randn_like(out)
            case = f"B{b} T{t} NH{nh} NKV{nkv} hd{hd}"
            ms = median_ms(forward)
            summary("attention_forward", f"torch sdpa {case}", ms, flops / (ms * 1e-3) / 1e12, tflops, "TFLOP/s")
            ms = median_ms(lambda: torch.autograd.grad(forward(), (q, k, v), dout))
            summary("attention_backward", f"torch sdpa fwd+bwd {case}", ms, 3.5 * flops / (ms * 1e-3) / 1e12, tflops,
                    "TFLOP/s")


def bench_adamw(gbs):
    for n in [64 << 20, 512 << 20]:
        p = torch.nn.Parameter(torch.randn(n, device=dev))
        p.grad = torch.randn(n, device=dev)
        opt = torch.optim.AdamW([p], lr=1e-3, fused=True)
        opt.step()  # creates the states
        ms = median_ms(opt.step)
        # fused AdamW reads p, g, m, v and writes p, m, v (fp32; no bf16 copy)
        summary("adamw", f"torch fused n={n >> 20}M", ms, 7.0 * 4 * n / (ms * 1e-3) / 1e9, gbs, "GB/s")
        del p, opt
        torch.cuda.empty_cache()


def bench_matmul(tflops):
    shapes = [("60m", 512, 1376), ("350m", 1024, 2736), ("1b", 2048, 5461), ("7b", 4096, 11008)]
    for model, c, f in shapes:
        x, w = randn(N_ROWS, c), randn(f, c)
        ms = median_ms(lambda: x @ w.t())
        summary("matmul_forward", f"torch {model} {N_ROWS}x{c}x{f}", ms, 2.0 * N_ROWS * c * f / (ms * 1e-3) / 1e12,
                tflops, "TFLOP/s")


def main():
    torch.manual_seed(0)
    print(f"dev/peers_torch.py on {torch.cuda.get_device_name()} (torch {torch.__version__})")
    gbs, tflops = copy_gbs(), bf16_tflops()
    print(f"measured copy bandwidth: {gbs:.0f} GB/s, bf16 matmul: {tflops:.0f} TFLOP/s")
    for bench in [bench_swiglu, bench_rmsnorm, bench_crossentropy, bench_attention, bench_adamw, bench_matmul]:
        try:
            bench(tflops if bench in (bench_attention, bench_matmul) else gbs)
        except Exception as e:  # noqa: BLE001 - one peer failing must not hide the others
            print(f"{bench.__name__} failed: {type(e).__name__}: {e}", file=sys.stderr)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
