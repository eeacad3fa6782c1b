#!/usr/bin/env python3
"""PyTorch baseline for `emoknow bench embed`: sentences/s of a BERT encoder on CPU.

Runs the same two setups as emoknow's `bench_embed` on the same sentences:
  (a) corpus order, batches of 32;
  (b) length-sorted batches of 64;
both with mean pooling over real tokens, L2-normalized, truncated at --max-len tokens.
Tokenization is inside the timed region, as in emoknow.

Needs: torch, transformers (pip install torch transformers). Example:
  python3 scripts/bench_embed_torch.py --encoder /path/to/m3e-small --data data/Train.csv --n 2000
  python3 scripts/bench_embed_torch.py ... --emoknow-json bench.json   # prints the ratio too
Train.csv is GB18030; the text is column 2.
"""
import json
import sys
import time

from torch_common import import_torch, parser, read_rows


def main():
    ap = parser(__doc__, 2000, "emoknow bench embed --json output, to print ratios")
    args = ap.parse_args()
    imported = import_torch(args.threads)
    if imported is None:
        return 2
    torch, AutoModel, AutoTokenizer = imported
    texts = [t for t, _ in read_rows(args.data, args.n)]
    tok = AutoTokenizer.from_pretrained(args.encoder)
    model = AutoModel.from_pretrained(args.encoder).eval()

    def encode(batch):
        enc = tok(batch, padding=True, truncation=True, max_length=args.max_len, return_tensors="pt")
        out = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
        v = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(v, dim=-1)

    def run(batch_size, sort):
        order = list(range(len(texts)))
        t0 = time.perf_counter()
        if sort:
            lens = [len(ids) for ids in tok(texts, truncation=True, max_length=args.max_len)["input_ids"]]
            order.sort(key=lambda i: lens[i])
        vecs = [None] * len(texts)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                v = encode([texts[i] for i in idx])
                for i, row in zip(idx, v):
                    vecs[i] = row
        secs = time.perf_counter() - t0
        return len(texts) / secs, secs, vecs

    with torch.inference_mode():
        encode(texts[:8])  # warm-up
    a, a_secs, va = run(32, False)
    b, b_secs, vb = run(64, True)
    diff = max(float((x - y).abs().max()) for x, y in zip(va, vb))
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "sentences": len(texts),
        "max_len": args.max_len,
        "corpus_order_b32": {"sentences_per_sec": round(a, 1), "secs": round(a_secs, 2)},
        "length_sorted_b64": {"sentences_per_sec": round(b, 1), "secs": round(b_secs, 2)},
        "max_abs_diff": diff,
    }
    if args.emoknow_json:
        with open(args.emoknow_json) as f:
            ek = json.load(f)
        ea = ek["corpus_order"]["sentences_per_sec"]
        eb = ek["length_sorted"]["sentences_per_sec"]
        result["emoknow_over_torch"] = {
            "corpus_order_b32": round(ea / a, 2),
            "length_sorted_b64": round(eb / b, 2),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
