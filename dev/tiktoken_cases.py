#!/usr/bin/env python3
"""tiktoken_cases.py: random hard texts encoded by the real tiktoken, for dev/check_tokenizer_jsonl.

Writes JSON lines {"text", "gpt2", "cl100k_base", "o200k_base"} (the format of
test/data/tiktoken_public.jsonl). The texts mix contractions, every character class the patterns test
(Lu Ll Lt Lm Lo, marks, numbers, Unicode spaces, newlines, '/', long s) and, with --all-code-points,
random code points from the whole range, which exposes Unicode-version differences in the tables.
Needs Python tiktoken (any recent version; its Rust core is what the npm package wraps); the
vocabularies come from data/tokenizers/tiktoken/, so no download is needed.

Usage: python3 dev/tiktoken_cases.py SEED COUNT OUT.jsonl [--all-code-points]
       build/dev/check_tokenizer_jsonl OUT.jsonl
"""
import base64
import json
import random
import sys

import tiktoken


def load(name):
    d = json.load(open(f"data/tokenizers/tiktoken/{name}.json"))
    fields = d["bpe_ranks"].split(" ")
    first = int(fields[1])
    ranks = {base64.b64decode(t): first + i for i, t in enumerate(fields[2:])}
    return tiktoken.Encoding(name, pat_str=d["pat_str"], mergeable_ranks=ranks,
                             special_tokens=d["special_tokens"], explicit_n_vocab=d.get("explicit_n_vocab"))


def main():
    seed, count, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    encodings = {n: load(n) for n in ["gpt2", "cl100k_base", "o200k_base"]}
    rng = random.Random(seed)
    alphabet = list("aZbY09 \t\r\n\x0b\x0c'sStTrReEvVmMlLdD/.,!?-_()<>|") + [
        "ſ", "K", "é", "É", "ǅ", "ǈ", "ʰ", "ー", "中", "ก", "\u0301", "\u0903", "\u20dd", "٣", "Ⅷ", "½",
        "\u00a0", "\u2003", "\u3000", "\u0085", "\u2028", "😀", "\U00020000", "ß", "İ", "ﬀ", "\u200b",
        "\u2060", "\U0001f3fb", "Σ", "ς", "\u0378", "\U000e0001", "𝟘", "\u1dc0", "ᾈ"]
    if "--all-code-points" in sys.argv:
        alphabet += [chr(c) for c in rng.sample([c for c in range(0x80, 0x323B0) if not 0xD800 <= c < 0xE000], 60000)]
    fragments = [" the", "Hello", "'s", "'LL", "HTMLParser", "don't", "I'M", "  \n", "123456", "x.\n\n", "//", "\r\n"]
    with open(out_path, "w") as out:
        for _ in range(count):
            parts = []
            for _ in range(rng.randint(1, 12)):
                if rng.random() < 0.2:
                    parts.append(rng.choice(fragments))
                else:
                    parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))))
            text = "".join(parts)
            record = {"text": text}
            for name, enc in encodings.items():
                record[name] = enc.encode_ordinary(text)
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
