"""What the PyTorch baselines (bench_embed_torch.py, bench_finetune_torch.py) share: reading
Train.csv (GB18030; text in column 2, labels in column 3 as "['Love', 'Joy']"), their common
flags, and importing torch with a clear message when it is missing."""
import argparse
import ast
import csv
import sys

EMOTIONS = ["Love", "Joy", "Anxiety", "Sorrow", "Expect", "Hate", "Surprise", "Anger"]


def read_rows(path, n):
    """The first n (0 = all) rows of a seed-format CSV as (text, [0/1 per emotion])."""
    with open(path, encoding="gb18030", newline="") as f:
        rows = csv.reader(f)
        next(rows)  # header
        out = []
        for r in rows:
            if len(r) < 3:
                continue
            labels = set(ast.literal_eval(r[2]))
            out.append((r[1], [1.0 if e in labels else 0.0 for e in EMOTIONS]))
    return out[:n] if n else out


def parser(doc, n_default, emoknow_help):
    """An argument parser with the flags both baselines take."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", required=True, help="Hugging Face BERT directory")
    ap.add_argument("--data", default="data/Train.csv")
    ap.add_argument("--n", type=int, default=n_default, help="first N sentences (0 = all)")
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--emoknow-json", help=emoknow_help)
    return ap


def import_torch(threads):
    """(torch, AutoModel, AutoTokenizer) with the thread count set, or None after saying what
    to install."""
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        print(f"torch/transformers not installed ({e}); pip install torch transformers", file=sys.stderr)
        return None
    if threads:
        torch.set_num_threads(threads)
    return torch, AutoModel, AutoTokenizer
