#!/usr/bin/env bash
# Writes src/text/jieba_frequent.txt: the 1,000 most frequent words of jieba's dictionary
# (word, frequency, part-of-speech tag), with the dictionary's total frequency, from the
# dict.txt of the jieba-rs crate the build uses (the same dictionary the search index segments
# with). The text-style derivation (src/text/style.rs) reads it; a unit test checks it against
# the linked jieba-rs.
#
# Usage: scripts/jieba_frequent.sh [PATH/TO/jieba-rs-X.Y.Z/src/data/dict.txt]
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
dict="${1:-$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/jieba-rs-0.11.0/src/data/dict.txt | head -n 1)}"
out=src/text/jieba_frequent.txt
{
    echo "# The 1,000 most frequent words of jieba's dictionary: word, frequency, tag."
    echo "# From jieba-rs 0.11.0 src/data/dict.txt (sha256 $(sha256sum "$dict" | cut -d' ' -f1)),"
    echo "# written by scripts/jieba_frequent.sh. MIT licence, as jieba's dictionary."
    echo "# total $(awk '{s += $2} END {print s}' "$dict")"
    sort -t' ' -k2,2nr -k1,1 "$dict" | head -n 1000
} > "$out"
echo "wrote $out"
