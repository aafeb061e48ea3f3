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
import shutil
import subprocess
import sys
import tempfile

try:
    import torch
    import transformers
    import peft
    import safetensors.torch
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


def llmq_logits(convert, model_dir, tokens, adapter=None, meta_qk=False):
    cmd = [convert, "logits", model_dir, "--tokens", ",".join(map(str, tokens))]
    if adapter:
        cmd += ["--adapter", adapter]
    if meta_qk:
        cmd += ["--meta-qk"]
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

    # (a') the same model sharded by transformers: same logits; roundtrip to one file gives the same bytes
    sharded, from_sharded = os.path.join(tmp, name + "_sharded"), os.path.join(tmp, name + "_unsharded")
    model.save_pretrained(sharded, max_shard_size="40KB")
    shards = [f for f in os.listdir(sharded) if f.endswith(".safetensors")]
    run([convert, "roundtrip", sharded, from_sharded])
    same_sharded = open(os.path.join(from_sharded, "model.safetensors"), "rb").read() == a
    d_sharded = (llmq_logits(convert, sharded, tokens) - ours).abs().max().item()
    print(f"[{name}] sharded input ({len(shards)} shards): logits diff {d_sharded}, roundtrip to one file "
          f"byte-identical {same_sharded}")
    if len(shards) < 2 or d_sharded != 0 or not same_sharded:
        failures.append(f"{name}: sharded")

    # (d) Meta's interleaved q/k layout: undo convert_llama_weights_to_hf.py's permute, load with --meta-qk
    meta = os.path.join(tmp, name + "_meta")
    os.makedirs(meta)
    hd = cfg.hidden_size // cfg.num_attention_heads
    sd = {k: v.clone() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    for k in sd:
        if k.endswith("q_proj.weight") or k.endswith("k_proj.weight"):
            heads = cfg.num_attention_heads if "q_proj" in k else cfg.num_key_value_heads
            w = sd[k]  # HF = permute(Meta) = Meta.view(h, hd/2, 2, in).transpose(1, 2); so Meta = its inverse:
            sd[k] = w.view(heads, 2, hd // 2, w.shape[1]).transpose(1, 2).reshape(w.shape).contiguous()
            back_to_hf = sd[k].view(heads, hd // 2, 2, w.shape[1]).transpose(1, 2).reshape(w.shape)
            assert torch.equal(back_to_hf, w)  # the script's permute undoes it
    safetensors.torch.save_file(sd, os.path.join(meta, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(src, "config.json"), meta)
    d_meta = (llmq_logits(convert, meta, tokens, meta_qk=True) - ours).abs().max().item()
    d_wrong = (llmq_logits(convert, meta, tokens) - ours).abs().max().item()
    print(f"[{name}] Meta q/k layout: logits diff with --meta-qk {d_meta}; read as HF layout (wrong) {d_wrong:.3g}")
    if d_meta != 0 or d_wrong < 1e-3:
        failures.append(f"{name}: meta layout")

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

    # (c') some modules only, each with its own rank and alpha: target_modules by full name, rank/alpha_pattern
    mixed = os.path.join(tmp, name + "_lora_mixed")
    run([convert, "lora-random", src, mixed, "--targets",
         "model.layers.0.self_attn.q_proj:2:3,model.layers.1.mlp.up_proj:5:10,model.layers.1.self_attn.v_proj",
         "--r", "3", "--alpha", "4", "--std", "0.3", "--seed", "9"])
    peft_mixed = PeftModel.from_pretrained(load_f32(src), mixed).eval()
    ranks = {n: m.r["default"] for n, m in peft_mixed.named_modules() if isinstance(getattr(m, "r", None), dict) and "default" in m.r}
    scales = {n: m.scaling["default"] for n, m in peft_mixed.named_modules() if isinstance(getattr(m, "scaling", None), dict) and "default" in m.scaling}
    d_mixed = (hf_logits(peft_mixed, tokens) - llmq_logits(convert, src, tokens, adapter=mixed)).abs().max().item()
    print(f"[{name}] LoRA, 3 modules with ranks {sorted(ranks.values())}, scales {[round(x, 6) for x in sorted(scales.values())]}: "
          f"max |peft - llmq --adapter| = {d_mixed:.3g}")
    if d_mixed > 1e-4 or sorted(ranks.values()) != [2, 3, 5] or sorted(scales.values()) != [4 / 3, 1.5, 2.0]:  # lora_alpha 4.0 exactly
        failures.append(f"{name}: mixed lora {d_mixed} {ranks} {scales}")


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
