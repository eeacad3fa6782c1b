#!/usr/bin/env python3
"""PyTorch baseline for `examples/bench_finetune`: fine-tuning examples/s of a BERT on CPU.

Trains what emoknow's `train --classifier finetune` trains, one epoch on the first N sentences
of Train.csv: the encoder in training mode (dropout 0.1), mean pooling over real tokens,
dropout 0.1, one linear layer to the 8 emotions, BCE with logits, AdamW (lr 5e-5, weight
decay 0.01 except biases and LayerNorm), 10% linear warmup then linear decay, global-norm
clipping at 1.0; batches cut the same way (shuffle, sort by length inside pools of 50 batches,
shuffle the batches), each padded to its longest sentence, truncated at --max-len tokens.
Tokenization is inside the timed loop. Prints one JSON line like bench_finetune's; with
--emoknow-json (bench_finetune's output line) it adds emoknow's examples/s over PyTorch's.

Needs: torch, transformers (pip install torch transformers). Example, run back to back:
  cargo run --release --example bench_finetune -- ../models/m3e-small 480 > ek.json
  python3 scripts/bench_finetune_torch.py --encoder ../models/m3e-small --n 480 \
      --threads 2 --emoknow-json ek.json
Train.csv is GB18030; the text is column 2, the labels column 3 ("['Love', 'Joy']").
"""
import json
import random
import sys
import time

from torch_common import EMOTIONS, import_torch, parser, read_rows


def batches(lens, batch, rng):
    idx = list(range(len(lens)))
    rng.shuffle(idx)
    out = []
    for p in range(0, len(idx), batch * 50):
        pool = sorted(idx[p : p + batch * 50], key=lambda i: lens[i])
        out.extend(pool[s : s + batch] for s in range(0, len(pool), batch))
    rng.shuffle(out)
    return out


def main():
    ap = parser(__doc__, 320, "bench_finetune's output line, to print the ratio")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    imported = import_torch(args.threads)
    if imported is None:
        return 2
    torch, AutoModel, AutoTokenizer = imported
    torch.manual_seed(42)
    rows = read_rows(args.data, args.n)
    texts = [t for t, _ in rows]
    targets = torch.tensor([y for _, y in rows])
    tok = AutoTokenizer.from_pretrained(args.encoder)
    encoder = AutoModel.from_pretrained(args.encoder, add_pooling_layer=False)
    head = torch.nn.Linear(encoder.config.hidden_size, len(EMOTIONS))
    drop = torch.nn.Dropout(0.1)
    encoder.train()
    named = list(encoder.named_parameters()) + [("head." + k, v) for k, v in head.named_parameters()]
    no_decay = [p for k, p in named if k.endswith(".bias") or "LayerNorm" in k]
    decay = [p for k, p in named if not (k.endswith(".bias") or "LayerNorm" in k)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=5e-5,
        eps=1e-8,
    )
    lens = [len(ids) for ids in tok(texts, truncation=True, max_length=args.max_len)["input_ids"]]
    order = batches(lens, args.batch, random.Random(42))
    total = len(order)
    warmup = round(0.1 * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()

    t0 = time.perf_counter()
    for chunk in order:
        enc = tok([texts[i] for i in chunk], padding=True, truncation=True, max_length=args.max_len, return_tensors="pt")
        hidden = encoder(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        loss = loss_fn(head(drop(pooled)), targets[chunk])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        sched.step()
    secs = time.perf_counter() - t0
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "examples": len(texts),
        "secs": round(secs, 1),
        "examples_per_sec": round(len(texts) / secs, 2),
        "max_len": args.max_len,
        "batch": args.batch,
        "last_loss": round(loss.item(), 4),
    }
    if args.emoknow_json:
        with open(args.emoknow_json) as f:
            ek = json.loads(f.read().strip().splitlines()[-1])
        result["emoknow_examples_per_sec"] = ek["examples_per_sec"]
        result["emoknow_over_torch"] = round(ek["examples_per_sec"] / result["examples_per_sec"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
