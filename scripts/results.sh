#!/usr/bin/env bash
# Reproduces docs/results.md's tables on the seed split, end to end, from a fresh store.
#
#   scripts/results.sh ENCODER_DIR [STORE_DIR]      (e.g. scripts/results.sh ../models/m3e-small)
#   RESUME=1 scripts/results.sh …                   keep STORE_DIR and skip every model already
#                                                   trained (a run that was stopped goes on)
#   VAL_BLOCK=100 EXCLUDE_WITHIN=100 scripts/results.sh …
#                                                   the document-aware protocol: validation in
#                                                   runs of 100 rows, no same-document neighbours
#   TEST_LAST=2000 VAL_BLOCK=100 EXCLUDE_WITHIN=100 scripts/results.sh …
#                                                   the held-out protocol: the last 2,000 rows
#                                                   are test too (never drawn into validation);
#                                                   the table adds each model's metrics on them
#   BUDGET_ONLY=1 scripts/results.sh …               only the budget model (ens4_ctx), its members,
#                                                   linear and frozen + neighbours
#
# Needs a release build (cargo build --release; EMOKNOW=path/to/binary runs another build) and
# a BERT encoder directory (m3e-small was used). Prints each step's command and wall time, then every model's test metrics. Thresholds
# and every choice come from the validation split; the test rows are only evaluated.
set -euo pipefail
enc=${1:?usage: scripts/results.sh ENCODER_DIR [STORE_DIR]}
store=${2:-results-store}
cd "$(dirname "$0")/.."
e=${EMOKNOW:-./target/release/emoknow}
m=$store/models
resume=${RESUME:-0}
[ "$resume" = 1 ] && [ -d "$m" ] || { resume=0; rm -rf "$store"; }
t0=$(date +%s)
step() {
  # With RESUME=1, a step is skipped when its --out directory exists (setup steps when models/ does).
  if [ "$resume" = 1 ]; then
    local out=""; local a prev=""; for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
    if [ -z "$out" ] || [ -d "$out" ]; then echo "\$ emoknow $* (done before)" >&2; return; fi
  fi
  echo "\$ emoknow $*" >&2; local s=$(date +%s.%N); "$e" --store "$store" -q "$@" > /dev/null; printf '  %.1f s\n' "$(echo "$(date +%s.%N) - $s" | bc)" >&2; }

# An ensemble of the given members three times: thresholds for micro-F1 (OUT), exact match
# (OUT_exact) and macro-F1 (OUT_macro).
ensembles() {
  local out=$1; shift
  step train --classifier ensemble "$@" --out "$out"
  step train --classifier ensemble "$@" --threshold-objective exact --out "${out}_exact"
  step train --classifier ensemble "$@" --threshold-objective macro --out "${out}_macro"
}

test_last=${TEST_LAST:-0}
step ingest data/Train.csv --val-block "${VAL_BLOCK:-1}" --test-last "$test_last"
step knowledge import data/generated_predictions.jsonl --source qwen-max --field label --first-id 1
step knowledge import data/generated_predictions.jsonl --source chatglm3-lora --field predict --first-id 1
# Text embeddings of all 26,000 sentences, then each example's 10 nearest training examples.
step embed --encoder "$enc" --max-len 64 --name m3e
step knowledge retrieve -k 10 --encoder m3e --exclude-within "${EXCLUDE_WITHIN:-0}"
nb="--knowledge neighbours --neighbours-source knn-m3e --neighbours-k 10"
# The best model on validation first, timed end to end (ens4_ctx): linear + document context
# (the words of the 3 sentences on each side and a text-only model's scores of them; the
# seed's file is one stream), linear + neighbours, frozen + neighbours + context (the context
# sentences' stored vectors, pooled per side; W chosen on validation of the document-aware
# protocol), and m3e-small fine-tuned on all training rows for one epoch, averaged.
step train --classifier linear --knowledge context --out $m/linear_ctx
step train --classifier linear $nb --out $m/linear_nb
step train --classifier frozen $nb --context 3 --out $m/frozen_nb_ctx
step train --classifier finetune --encoder-dir "$enc" --epochs 1 --lr 1e-4 --max-len 64 --batch 16 --out $m/finetune_full
ctx3="--member $m/linear_ctx --member $m/linear_nb --member $m/frozen_nb_ctx"
ctx4="$ctx3 --member $m/finetune_full"
step train --classifier ensemble $ctx4 --out $m/ens4_ctx
echo "end to end (ingest → best model): $(( $(date +%s) - t0 )) s" >&2
if [ "${BUDGET_ONLY:-0}" = 1 ]; then
  # Only the budget model, its members, and the text-only linear and frozen + neighbours
  # models (scripts/raw_text.sh evaluates these on text as written).
  step train --classifier linear --out $m/linear
  step train --classifier frozen $nb --out $m/frozen_nb
  models="linear linear_ctx linear_nb frozen_nb frozen_nb_ctx finetune_full ens4_ctx"
fi
# Label-set decoding of the budget ensemble (settings chosen on validation): the most probable
# set (exact match), the labels above one cut of their probability under the set model
# (micro-F1), and the set of highest expected F1 (macro objective).
step train --classifier ensemble $ctx4 --decode sets --threshold-objective exact --out $m/ens4_ctx_sets
step train --classifier ensemble $ctx4 --decode sets --out $m/ens4_ctx_sets_micro
step train --classifier ensemble $ctx4 --decode sets --threshold-objective macro --out $m/ens4_ctx_sets_f1
if [ "${BUDGET_ONLY:-0}" = 1 ]; then
  models="$models ens4_ctx_sets ens4_ctx_sets_micro ens4_ctx_sets_f1"
else
step train --classifier ensemble $ctx4 --threshold-objective exact --out $m/ens4_ctx_exact
step train --classifier ensemble $ctx4 --threshold-objective macro --out $m/ens4_ctx_macro
# The same without linear + neighbours (ahead of ens4_ctx on validation micro by .001-.002).
ctx3full="--member $m/linear_ctx --member $m/frozen_nb_ctx --member $m/finetune_full"
ensembles $m/ens3_ctx_full $ctx3full
# The best text-only model: linear, linear + neighbours, frozen + neighbours, the fine-tune.
step train --classifier linear --out $m/linear
step train --classifier frozen $nb --out $m/frozen_nb
ensembles $m/ens4_full --member $m/linear --member $m/linear_nb --member $m/frozen_nb --member $m/finetune_full
# The budget model of earlier rounds: the same with a 12,000-row fine-tune.
step train --classifier finetune --encoder-dir "$enc" --max-train 12000 --epochs 1 --lr 1e-4 --max-len 64 --batch 16 --out $m/finetune_12000
step train --classifier ensemble --member $m/linear --member $m/linear_nb --member $m/frozen_nb --member $m/finetune_12000 --out $m/ens4
step train --classifier ensemble --member $m/linear --member $m/linear_nb --member $m/frozen_nb --member $m/finetune_12000 --threshold-objective exact --out $m/ens4_exact
# The other rows.
step train --classifier linear --threshold-objective macro --out $m/linear_macro
# Document context for linear: macro objective, and the context's words alone (no scores).
step train --classifier linear --knowledge context --threshold-objective macro --out $m/linear_ctx_macro
step train --classifier linear --knowledge context --context-scores 0 --out $m/linear_ctx_words
step train --classifier frozen --out $m/frozen
step train --classifier knn -k 10 --out $m/knn
step train --classifier frozen $nb --stack-linear 5 --out $m/frozen_nb_stack
step train --classifier ensemble --member $m/linear --member $m/frozen_nb --out $m/ens2
step train --classifier ensemble --member $m/linear --member $m/linear_nb --member $m/frozen_nb --out $m/ens3
step train --classifier ensemble --member $m/linear --member $m/linear_nb --member $m/frozen_nb --threshold-objective exact --out $m/ens3_exact
step train --classifier ensemble --member $m/linear --member $m/frozen_nb_stack --out $m/ens_stack
# Other ensembles of context members.
step train --classifier frozen --knowledge context --context 3 --out $m/frozen_ctx
step train --classifier ensemble $ctx3 --out $m/ens3_ctx
step train --classifier ensemble $ctx3 --threshold-objective exact --out $m/ens3_ctx_exact
step train --classifier ensemble $ctx3 --member $m/frozen_ctx --out $m/ens4_ctx_frozen
step train --classifier ensemble --member $m/linear_ctx_words --member $m/linear_nb --member $m/frozen_nb_ctx --member $m/finetune_full --out $m/ens4_ctx_words
step train --classifier ensemble $ctx4 --member $m/frozen_ctx --out $m/ens5_ctx
# The fine-tune reading one sentence on each side as a sentence pair, text [SEP] before [SEP]
# after (--max-len 96 makes room: 76 tokens on average), and the context ensemble with it; it
# takes twice the text-only fine-tune's time, outside the 15-minute budget (docs/results.md).
step train --classifier finetune --encoder-dir "$enc" --knowledge context --epochs 1 --lr 1e-4 --max-len 96 --batch 16 --out $m/finetune_ctx
ctx4ft="$ctx3 --member $m/finetune_ctx"
ensembles $m/ens4_ctx_ft $ctx4ft
# Two epochs of the full-data fine-tune (about twice its time: outside the 15-minute budget),
# and both context ensembles with it.
step train --classifier finetune --encoder-dir "$enc" --epochs 2 --lr 1e-4 --max-len 64 --batch 16 --out $m/finetune_ep2
ctx4ep2="$ctx3 --member $m/finetune_ep2"
ensembles $m/ens4_ctx_ep2 $ctx4ep2
ctx3ep2="--member $m/linear_ctx --member $m/frozen_nb_ctx --member $m/finetune_ep2"
ensembles $m/ens3_ctx_ep2 $ctx3ep2
# The full-data fine-tune with each label's positives weighed by its negatives / positives
# (--pos-weight auto; tried, not adopted), and ens4_ctx with it.
step train --classifier finetune --encoder-dir "$enc" --epochs 1 --lr 1e-4 --max-len 64 --batch 16 --pos-weight auto --out $m/finetune_pw
ensembles $m/ens4_ctx_pw $ctx3 --member $m/finetune_pw
# The seed's knowledge protocol: train on rows 1001–2000 with qwen-max's rationales, test on
# rows 1–1000 with chatglm3's; and text only on the same rows.
seed="--source qwen-max --eval-source chatglm3-lora --only-with-knowledge"
step train --classifier linear --knowledge none $seed --out $m/seed_text
step train --classifier linear --knowledge rationale $seed --out $m/seed_rationale
# Fine-tuning on CPU: a 2,000-example subset, one epoch.
step train --classifier finetune --encoder-dir "$enc" --max-train 2000 --epochs 1 --max-len 64 --batch 16 --out $m/finetune_2000

models="ens4_ctx_sets ens4_ctx_sets_micro ens4_ctx_sets_f1 linear linear_macro linear_ctx linear_ctx_macro linear_ctx_words frozen knn frozen_nb linear_nb frozen_nb_stack ens2 ens3 ens3_exact ens_stack finetune_full ens4_full ens4_full_exact ens4_full_macro finetune_12000 ens4 ens4_exact frozen_ctx frozen_nb_ctx ens3_ctx ens3_ctx_exact ens4_ctx_frozen ens4_ctx ens4_ctx_exact ens4_ctx_macro ens3_ctx_full ens3_ctx_full_exact ens3_ctx_full_macro ens4_ctx_words ens5_ctx finetune_ctx ens4_ctx_ft ens4_ctx_ft_exact ens4_ctx_ft_macro finetune_ep2 ens4_ctx_ep2 ens4_ctx_ep2_exact ens4_ctx_ep2_macro ens3_ctx_ep2 ens3_ctx_ep2_exact ens3_ctx_ep2_macro finetune_pw ens4_ctx_pw ens4_ctx_pw_exact ens4_ctx_pw_macro seed_text seed_rationale finetune_2000"
fi
row() { python3 -c "import json,sys; r=json.load(sys.stdin); v=json.load(open('$m/$1/meta.json'))['val']; print('%-16s %-8.3f %-8.3f %-8.3f %-8.3f %.3f→%.3f   (%.3f / %.3f, exact %.3f)' % ('$1', r['hamming_accuracy'], r['exact_match'], r['micro_f1'], r['macro_f1'], r['uncalibrated_ece'], r['calibration']['ece'], v['micro_f1'], v['macro_f1'], v['exact_match']))"; }
printf '\n%-16s %-8s %-8s %-8s %-8s %-11s   %s\n' model hamming exact micro-F1 macro-F1 "ECE" "(validation micro / macro, exact)"
for d in $models; do
  "$e" --store "$store" --json eval --model "$m/$d" --ids 1-1000 | row "$d"
done
if [ "$test_last" -gt 0 ]; then
  # The held-out rows alone (ids of the seed's file are its row numbers: 26,000 rows).
  last="$((26000 - test_last + 1))-26000"
  printf '\nthe last %s rows (ids %s), never touched by any choice:\n' "$test_last" "$last"
  for d in $models; do
    case $d in seed_*) continue ;; esac
    "$e" --store "$store" --json eval --model "$m/$d" --ids "$last" | row "$d"
  done
fi
