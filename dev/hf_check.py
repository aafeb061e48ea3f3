#!/usr/bin/env python3
"""hf_check: llmq's HF interop checked by the real libraries (transformers, peft, safetensors, torch).

For each variant (untied and tied, GQA, rope_theta != 10000; bf16 and f32 files):
  (a) a random small LlamaForCausalLM saved by transformers goes through `./convert roundtrip`; the output
      model.safetensors must be byte-for-byte the input (same dtype, same metadata, the library's order);
      the output also loads in transformers with identical tensors;
  (b) the logits of transformers (fp32, CPU) and `./convert logits` on the same tokens are compared;
  (c) `./convert lora-random` writes a random LoRA adapter in peft's layout and the merged model;
      PeftModel.from_pretrained(base, adapter) logits are compared with `./convert logits --adapter`, and the
      merged model's transformers logits with both.
Run from the repository root after `make convert`:  python3 dev/hf_check.py [--convert ./convert]
Skips with a message (exit 0) when torch/transformers/peft/safetensors are missing.
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import transformers
    import peft
    import safetensors  # noqa: F401
    from transformers import LlamaConfig, LlamaForCausalLM
    from peft import PeftModel
except ImportError as e:  # the check needs the real libraries; without them there is nothing to compare
    print(f"hf_check: skipped ({e}); install torch transformers peft safetensors to run it")
    sys.exit(0)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"hf_check: {' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout


def llmq_logits(convert, model_dir, tokens, adapter=None):
    cmd = [convert, "logits", model_dir, "--tokens", ",".join(map(str, tokens))]
    if adapter:
        cmd += ["--adapter", adapter]
    rows = [list(map(float, line.split())) for line in run(cmd).strip().split("\n")]
    return torch.tensor(rows, dtype=torch.float64)


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].double()


def load_f32(path):
    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def check_variant(convert, tmp, name, tied, dtype, failures):
    torch.manual_seed(1234 + tied)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, rope_theta=50000.0, rms_norm_eps=1e-5,
                      max_position_embeddings=64, tie_word_embeddings=tied,
                      initializer_range=0.1)  # larger than 0.02 so logits are O(1..10), not O(0.1)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # norms away from 1 so a wrong norm weight cannot hide
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    model = model.to(dtype).eval()
    src, out = os.path.join(tmp, name + "_hf"), os.path.join(tmp, name + "_rt")
    model.save_pretrained(src)
    tokens = [int(t) for t in torch.randint(0, cfg.vocab_size, (12,))]

    # (a) roundtrip byte equality
    run([convert, "roundtrip", src, out])
    a = open(os.path.join(src, "model.safetensors"), "rb").read()
    b = open(os.path.join(out, "model.safetensors"), "rb").read()
    same = a == b
    back = LlamaForCausalLM.from_pretrained(out, dtype=dtype)
    sd_a, sd_b = model.state_dict(), back.state_dict()
    tensors_equal = all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    print(f"[{name}] roundtrip: safetensors {len(a)} bytes, byte-identical {same}; reloaded tensors equal {tensors_equal}")
    if not (same and tensors_equal):
        failures.append(f"{name}: roundtrip")

    # (b) logits, transformers fp32 on the (possibly bf16) weights vs llmq fp32
    ref = hf_logits(load_f32(src), tokens)
    ours = llmq_logits(convert, src, tokens)
    diff = (ref - ours).abs().max().item()
    print(f"[{name}] logits: max |transformers - llmq| = {diff:.3g} (max |logit| {ref.abs().max().item():.3g})")
    if diff > 1e-4:
        failures.append(f"{name}: logits diff {diff}")

    # (c) LoRA through peft, and the merged model
    adapter, merged = os.path.join(tmp, name + "_lora"), os.path.join(tmp, name + "_merged")
    targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" + ("" if tied else ",lm_head")
    run([convert, "lora-random", src, adapter, "--targets", targets, "--r", "4", "--alpha", "8", "--std", "0.2",
         "--seed", "7", "--merged", merged])
    peft_model = PeftModel.from_pretrained(load_f32(src), adapter).eval()
    ref_lora = hf_logits(peft_model, tokens)
    ours_lora = llmq_logits(convert, src, tokens, adapter=adapter)
    merged_ref = hf_logits(load_f32(merged), tokens)
    d_lora = (ref_lora - ours_lora).abs().max().item()
    d_merged = (merged_ref - ours_lora).abs().max().item()
    effect = (ref_lora - ref).abs().max().item()
    print(f"[{name}] LoRA: max |peft - llmq --adapter| = {d_lora:.3g}; max |transformers(merged) - llmq --adapter| = "
          f"{d_merged:.3g}; the adapter moves logits by up to {effect:.3g}")
    if d_lora > 1e-4 or d_merged > 1e-4 or effect < 1e-2:
        failures.append(f"{name}: lora diff {d_lora} merged diff {d_merged} effect {effect}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--convert", default="./convert")
    args = ap.parse_args()
    if not os.path.exists(args.convert):
        raise SystemExit(f"hf_check: {args.convert} not found (make convert)")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for tied in (False, True):
            for dtype in (torch.float32, torch.bfloat16):
                name = f"{'tied' if tied else 'untied'}_{str(dtype).split('.')[-1]}"
                check_variant(args.convert, tmp, name, tied, dtype, failures)
    if failures:
        print("hf_check: FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("hf_check: all checks passed")


if __name__ == "__main__":
    main()
