#!/usr/bin/env bash
# Text as people write it against the corpus's cleaned text: every model of STORE_DIR/models
# named below, evaluated on RAW_CSV (test sentences as their authors wrote them: `ID,Text,
# Labels,Doc`, e.g. raw-test/test_raw.csv) and on the same ids' text from data/Train.csv (with
# the same Doc column), each file's documents giving context models their context.
#
#   scripts/raw_text.sh RAW_CSV [STORE_DIR] [MODEL ...]
#
# STORE_DIR (default results-store) comes from scripts/results.sh (BUDGET_ONLY=1 is enough);
# default models: linear linear_ctx frozen_nb finetune_full ens4_ctx. RAW_CSV is read, never
# copied: the cleaned counterpart is written to a temporary file and removed.
set -euo pipefail
raw=${1:?usage: scripts/raw_text.sh RAW_CSV [STORE_DIR] [MODEL ...]}
store=${2:-results-store}
shift $(( $# < 2 ? $# : 2 ))
models=${*:-linear linear_ctx frozen_nb finetune_full ens4_ctx}
cd "$(dirname "$0")/.."
e=${EMOKNOW:-./target/release/emoknow}
clean=$(mktemp --suffix .csv)
trap 'rm -f "$clean"' EXIT
python3 - "$raw" data/Train.csv "$clean" <<'EOF'
import csv, sys
raw, train, out = sys.argv[1:]
cleaned = {r["ID"]: r for r in csv.DictReader(open(train, encoding="gb18030"))}
with open(raw, encoding="utf-8") as f, open(out, "w", newline="", encoding="utf-8") as o:
    w = csv.writer(o)
    w.writerow(["ID", "Text", "Labels", "Doc"])
    for r in csv.DictReader(f):
        w.writerow([r["ID"], cleaned[r["ID"]]["Text"], r["Labels"], r["Doc"]])
EOF
metrics() {
  "$e" --store "$store" -q --json eval --model "$store/models/$1" --file "$2" --doc-column Doc \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print(r['n'], r['hamming_accuracy'], r['exact_match'], r['micro_f1'], r['macro_f1'])"
}
printf '%-14s %-26s %-26s %s\n' model "cleaned (hamming exact micro macro)" "as written" "Δ micro  Δ macro"
for m in $models; do
  read -r n ch ce cmi cma < <(metrics "$m" "$clean")
  read -r _ rh re rmi rma < <(metrics "$m" "$raw")
  python3 -c "
print('%-14s %.3f %.3f %.3f %.3f    %.3f %.3f %.3f %.3f    %+.3f   %+.3f   (n = %s)' % (
    '$m', $ch, $ce, $cmi, $cma, $rh, $re, $rmi, $rma, $rmi - $cmi, $rma - $cma, '$n'))"
done
