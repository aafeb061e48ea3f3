#!/usr/bin/env python3
"""dev/peers_torch.py: what a user would pick instead of llmq's kernels, timed on the same shapes.

`make gpucheck` runs it where PyTorch with CUDA is installed. For each op of the dev/*.cu benchmarks it times
PyTorch's own implementation (eager, and torch.compile where that fuses the op) on the same shapes and prints
the same SUMMARY lines (bench|case|ms|achieved|of peak), with the case named "torch ..." so the gpucheck table
shows llmq's versions and PyTorch's side by side. Ceilings are measured here, in the same run, the same way as
dev/dev_cuda.h does: a 1 GiB device-to-device copy (bytes read + written) and an 8192^3 bf16 matmul.

Timing: CUDA events around each call, median of 20 after 3 warm-ups (dev/dev_cuda.h's median_ms); whole training
steps (bench_train_step, dev/train_step.cu's peer) by the wall clock, median of 10 after 3 warm-ups.

  python3 dev/peers_torch.py [bench ...]   e.g. `train_step` runs only bench_train_step; default: all of them
  LLMQ_PEERS_QUICK=1      eager only (no torch.compile anywhere)
  LLMQ_PEERS_BUDGET=140   seconds the whole script should take (dev/gpucheck.sh gives it 150): bench_train_step
                          starts no torch.compile with less than COMPILE_RESERVE_S of it left
"""
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

dev = torch.device("cuda")
bf16 = torch.bfloat16
N_ROWS = 8192  # B*T of the kernels' benchmarks
T0 = time.perf_counter()
QUICK = os.environ.get("LLMQ_PEERS_QUICK", "0") not in ("", "0")
BUDGET_S = float(os.environ.get("LLMQ_PEERS_BUDGET", "140"))
COMPILE_RESERVE_S = 60  # a cold torch.compile of one 60m shape (fwd + bwd) plus its timed steps, with margin


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
    if QUICK:
        return out
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


# ---- whole training steps: dev/train_step.cu's peer ----
# layers/config.cpp's presets: dim, ffn, heads, kv heads, layers; vocab 32000 and a separate (untied) lm_head
TRAIN_PRESETS = {"60m": (512, 1376, 8, 8, 8), "130m": (768, 2048, 12, 12, 12), "350m": (1024, 2736, 16, 16, 24),
                 "1b": (2048, 5461, 32, 32, 24)}
TRAIN_CASES = [("60m", 16, 256), ("60m", 4, 1024), ("350m", 16, 256), ("350m", 4, 1024)]  # train_step.cu's default
TRAIN_COMPILE = ("60m",)  # torch.compile'd too (the cold compile is what the lease can afford once)
TRAIN_VOCAB = 32000
TRAIN_WARMUP, TRAIN_STEPS = 3, 10
GiB = float(1 << 30)


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, dim, nh, nkv):
        super().__init__()
        self.nh, self.nkv, self.hd = nh, nkv, dim // nh
        self.q_proj = torch.nn.Linear(dim, nh * self.hd, bias=False)
        self.k_proj = torch.nn.Linear(dim, nkv * self.hd, bias=False)
        self.v_proj = torch.nn.Linear(dim, nkv * self.hd, bias=False)
        self.o_proj = torch.nn.Linear(nh * self.hd, dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd).transpose(1, 2)  # (b, nh, t, hd)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)  # (t, hd), as HF casts them: q, k stay bf16 under autocast
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.nkv != self.nh:  # GQA: query head h reads kv head h // (nh / nkv), as llmq's kernels
            k = k.repeat_interleave(self.nh // self.nkv, dim=1)
            v = v.repeat_interleave(self.nh // self.nkv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.nh * self.hd))


class MLP(torch.nn.Module):
    def __init__(self, dim, ffn):
        super().__init__()
        self.gate_proj = torch.nn.Linear(dim, ffn, bias=False)
        self.up_proj = torch.nn.Linear(dim, ffn, bias=False)
        self.down_proj = torch.nn.Linear(ffn, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(torch.nn.Module):
    def __init__(self, dim, ffn, nh, nkv):
        super().__init__()
        self.input_layernorm = RMSNorm(dim)
        self.self_attn = Attention(dim, nh, nkv)
        self.post_attention_layernorm = RMSNorm(dim)
        self.mlp = MLP(dim, ffn)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(torch.nn.Module):
    """layers/model.h's decoder: HF LLaMA's modules and names, no biases, untied lm_head, loss out"""

    def __init__(self, preset, vocab):
        super().__init__()
        dim, ffn, nh, nkv, nl = TRAIN_PRESETS[preset]
        self.embed_tokens = torch.nn.Embedding(vocab, dim)
        self.layers = torch.nn.ModuleList(Block(dim, ffn, nh, nkv) for _ in range(nl))
        self.norm = RMSNorm(dim)
        self.lm_head = torch.nn.Linear(dim, vocab, bias=False)
        for m in self.modules():  # llmq's initialisation: normal(0, 0.02) for every matrix, norms 1
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(m.weight, std=0.02)

    def forward(self, tokens, targets, cos, sin):
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


def rope_tables(t, hd, theta=10000.0):
    """cos, sin (t, hd) fp32 in the rotate_half layout: angle pos * theta^(-2i/hd), computed in double"""
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64, device=dev) / hd)
    ang = torch.arange(t, dtype=torch.float64, device=dev)[:, None] * inv[None, :]
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos().float(), ang.sin().float()


def train_step_flops(preset, b, t):
    """dev/train_step.cu's formula: b*t * (6*N + 6*L*t*NH*hd), N = every parameter but the input embedding"""
    dim, ffn, nh, nkv, nl = TRAIN_PRESETS[preset]
    hd = dim // nh
    per_layer = 2 * dim + nh * hd * dim + 2 * nkv * hd * dim + dim * nh * hd + 3 * ffn * dim
    n = TRAIN_VOCAB * dim + nl * per_layer + dim  # lm_head, the layers, the final norm
    return b * t * (6.0 * n + 6.0 * nl * t * nh * hd), n + TRAIN_VOCAB * dim


def time_left():
    return BUDGET_S - (time.perf_counter() - T0)


def run_train_case(preset, b, t, compiled, tflops):
    """one configuration: a fresh model and AdamW, 3 warm-up steps (the compile among them), median of 10"""
    name = f"{'torch.compile' if compiled else 'torch eager'} {preset} B{b} T{t}"
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with dev:  # parameters drawn on the GPU (fp32 masters)
        model = Llama(preset, TRAIN_VOCAB)
    flops, n_total = train_step_flops(preset, b, t)
    n_model = sum(p.numel() for p in model.parameters())
    assert n_model == n_total, f"{preset}: the PyTorch model has {n_model} parameters, layers/config.cpp {n_total}"
    if compiled:  # regional compilation: every block shares one compiled graph (cold start once, not per layer)
        for layer in model.layers:
            layer.compile()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() == 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    cos, sin = rope_tables(t, TRAIN_PRESETS[preset][0] // TRAIN_PRESETS[preset][2])
    times, losses = [], []
    norm = 0.0
    for s in range(TRAIN_WARMUP + TRAIN_STEPS):
        tokens = torch.randint(0, TRAIN_VOCAB, (b, t), device=dev)
        targets = torch.randint(0, TRAIN_VOCAB, (b, t), device=dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=bf16):
            loss = model(tokens, targets, cos, sin)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())  # the loss on the host every step, as llmq's forward returns it
        torch.cuda.synchronize()
        if s >= TRAIN_WARMUP:
            times.append((time.perf_counter() - t0) * 1e3)
    ms = sorted(times)[len(times) // 2]
    achieved = flops / (ms * 1e-3) / 1e12
    summary("train_step", name, ms, achieved, tflops, "TFLOP/s")
    free, total = torch.cuda.mem_get_info()
    print(f"  {name}: {ms:.2f} ms/step (min {min(times):.2f}, max {max(times):.2f}), {b * t / (ms * 1e-3):.0f} "
          f"tokens/s, MFU {100 * achieved / tflops:.1f}%, loss {losses[0]:.3f} -> {losses[-1]:.3f}, grad norm "
          f"{float(norm):.3f}", flush=True)
    print(f"  {name}: torch.cuda.max_memory_allocated {torch.cuda.max_memory_allocated() / GiB:.2f} GiB (max reserved "
          f"{torch.cuda.max_memory_reserved() / GiB:.2f} GiB; GPU in use after the steps {(total - free) / GiB:.2f} "
          f"GiB, the CUDA context included, as dev/train_step.cu counts)", flush=True)
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"{name}: non-finite loss {losses}")


def bench_train_step(tflops):
    """whole training steps (zero_grad, bf16 autocast forward, backward, clip_grad_norm_, fused AdamW) on
    dev/train_step.cu's configurations: eager for all, torch.compile (per block) for TRAIN_COMPILE's presets
    while the budget allows; every configuration a fresh fp32 model"""
    failed = []
    for preset, b, t in TRAIN_CASES:
        try:
            run_train_case(preset, b, t, False, tflops)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: report and go on
            print(f"  torch eager {preset} B{b} T{t} failed: {type(e).__name__}: {e}".splitlines()[0], flush=True)
            failed.append(f"eager {preset} B{b} T{t}")
    for preset, b, t in TRAIN_CASES:
        if preset not in TRAIN_COMPILE:
            continue
        if QUICK:
            print("train_step: torch.compile skipped (LLMQ_PEERS_QUICK)", file=sys.stderr)
            break
        if time_left() < COMPILE_RESERVE_S:
            print(f"train_step: torch.compile {preset} B{b} T{t} skipped: {time_left():.0f} s left of the "
                  f"{BUDGET_S:.0f} s budget (LLMQ_PEERS_BUDGET), {COMPILE_RESERVE_S} s needed", file=sys.stderr)
            continue
        try:
            run_train_case(preset, b, t, True, tflops)
        except Exception as e:  # noqa: BLE001 - no working Triton here, say: eager stands alone
            print(f"torch.compile unavailable for train_step: {type(e).__name__}: {e}".splitlines()[0],
                  file=sys.stderr)
            break
        finally:
            torch.cuda.empty_cache()
    if failed:
        raise RuntimeError(f"{len(failed)} configuration(s) failed: {', '.join(failed)}")


def main():
    torch.manual_seed(0)
    print(f"dev/peers_torch.py on {torch.cuda.get_device_name()} (torch {torch.__version__})")
    gbs, tflops = copy_gbs(), bf16_tflops()
    print(f"measured copy bandwidth: {gbs:.0f} GB/s, bf16 matmul: {tflops:.0f} TFLOP/s")
    benches = [bench_swiglu, bench_rmsnorm, bench_crossentropy, bench_attention, bench_adamw, bench_matmul,
               bench_train_step]
    if len(sys.argv) > 1:  # e.g. `train_step`: only the benches named
        unknown = set(sys.argv[1:]) - {b.__name__[len("bench_"):] for b in benches}
        if unknown:
            print(f"unknown bench {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        benches = [b for b in benches if b.__name__[len("bench_"):] in sys.argv[1:]]
    for bench in benches:
        try:
            bench(tflops if bench in (bench_attention, bench_matmul, bench_train_step) else gbs)
        except Exception as e:  # noqa: BLE001 - one peer failing must not hide the others
            print(f"{bench.__name__} failed: {type(e).__name__}: {e}", file=sys.stderr)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
