//! [`TextStyle`]: how a corpus is written, and how to learn that from the corpus itself.

use super::is_mark;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

/// Whether a corpus keeps punctuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Punctuation {
    /// Every mark stays as written.
    #[default]
    Kept,
    /// Marks are removed, except the [`TextStyle::kept_marks`].
    Removed,
}

/// How a corpus writes Latin letters and digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Width {
    /// Either: left as written.
    #[default]
    Any,
    /// Half-width (ASCII): `AB12`.
    Half,
    /// Full-width: `ＡＢ１２` (the seed's corpus).
    Full,
}

/// How a corpus is written: what [`crate::text::Normalizer`] brings new text to.
///
/// Learned from a corpus by [`TextStyle::derive`], or declared in a JSON file with these
/// fields (`emoknow ingest --text-style FILE`); the lists may be omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextStyle {
    /// Words are separated by spaces (`很 担心 明天 考试`), as jieba segments them with the
    /// corpus's own vocabulary; otherwise text is written without spaces between CJK
    /// characters.
    pub segmented: bool,
    /// Whether punctuation stays.
    #[serde(default)]
    pub punctuation: Punctuation,
    /// With punctuation removed, the marks the corpus still writes (e.g. `…`), kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kept_marks: String,
    /// Letter and digit width.
    #[serde(default)]
    pub width: Width,
    /// Words the corpus's cleaning dropped (的, 了, 是 …): removed from new text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// Words of jieba's dictionary the corpus writes as two words (不是 → 不 是): the
    /// segmenter cuts them apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<String>,
}

impl TextStyle {
    /// The style of text written as people write it: punctuation kept, nothing dropped,
    /// no spaces between words.
    pub fn as_written() -> TextStyle {
        TextStyle {
            segmented: false,
            punctuation: Punctuation::Kept,
            kept_marks: String::new(),
            width: Width::Any,
            dropped: Vec::new(),
            split: Vec::new(),
        }
    }

    /// Whether `text` is segmented as the style says: with spaces between its words (or a
    /// single character) for a segmented style, without spaces between CJK characters
    /// otherwise.
    pub fn segments_like(&self, text: &str) -> bool {
        let t = text.trim();
        if self.segmented {
            t.contains(char::is_whitespace) || t.chars().nth(1).is_none()
        } else {
            let chunks: Vec<&str> = t.split_whitespace().collect();
            !chunks.windows(2).any(|w| {
                let cjk = |c: Option<char>| c.is_some_and(super::is_cjk);
                cjk(w[0].chars().next_back()) && cjk(w[1].chars().next())
            })
        }
    }

    /// Whether `c` (a mark) is kept.
    pub fn keeps_mark(&self, c: char) -> bool {
        self.punctuation == Punctuation::Kept || self.kept_marks.contains(c)
    }

    /// One line for people: `segmented with spaces; punctuation removed (kept: … —); …`.
    pub fn describe(&self) -> String {
        let mut parts = vec![if self.segmented {
            "segmented with spaces".to_string()
        } else {
            "not segmented".to_string()
        }];
        parts.push(match self.punctuation {
            Punctuation::Kept => "punctuation kept".to_string(),
            Punctuation::Removed if self.kept_marks.is_empty() => "punctuation removed".into(),
            Punctuation::Removed => {
                let marks: Vec<String> = self.kept_marks.chars().map(String::from).collect();
                format!("punctuation removed (kept: {})", marks.join(" "))
            }
        });
        match self.width {
            Width::Any => {}
            Width::Half => parts.push("half-width letters and digits".into()),
            Width::Full => parts.push("full-width letters and digits".into()),
        }
        let list = |what: &str, words: &[String]| {
            if words.is_empty() {
                format!("{what}: none")
            } else {
                format!("{what} ({}): {}", words.len(), words.join(" "))
            }
        };
        parts.push(list("dropped words", &self.dropped));
        if !self.split.is_empty() {
            parts.push(list("written apart", &self.split));
        }
        parts.join("; ")
    }

    /// Checks a declared style: words are non-empty and single tokens, marks are marks.
    pub fn validate(&self) -> Result<(), String> {
        for w in self.dropped.iter().chain(&self.split) {
            if w.is_empty() || w.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "word {w:?} is empty or holds whitespace: list single words"
                ));
            }
        }
        if let Some(c) = self.kept_marks.chars().find(|&c| !is_mark(c)) {
            return Err(format!(
                "kept_marks holds {c:?}, which is not a punctuation mark or symbol"
            ));
        }
        Ok(())
    }

    /// Learns how `texts` (a corpus's sentences) are written.
    ///
    /// - segmented: at least half the sentences of four or more characters have spaces
    ///   between words;
    /// - punctuation: kept when at least half the sentences hold a mark; else removed, except
    ///   marks found in at least one sentence in a thousand (and two sentences);
    /// - width: full (half) when at least 90% of the Latin letters and digits (and 20) are;
    /// - dropped words: among the 1,000 words jieba's dictionary ranks most frequent, function
    ///   words (pronouns, particles, prepositions, numerals, verbs …, not nouns) that the
    ///   corpus almost never contains: fewer than 1% of the times the dictionary's frequency
    ///   predicts for a corpus of its size, when that prediction is at least 50 (so that a
    ///   word's absence is neither chance nor a small corpus's narrow topic: a corpus needs
    ///   about 10,000 words before 的 can be found dropped). A word the
    ///   corpus writes in two parts instead (不是 as 不 and 是), one part being a word it uses
    ///   at least as often as the whole was expected, is not dropped but listed in `split`.
    ///
    /// Words are counted on the corpus's own segmentation when it is segmented, else on
    /// jieba's.
    pub fn derive(texts: &[&str]) -> TextStyle {
        let n = texts.len();
        let (mut long, mut spaced, mut with_mark) = (0usize, 0usize, 0usize);
        let (mut ascii, mut full) = (0usize, 0usize);
        let mut mark_sentences: BTreeMap<char, usize> = BTreeMap::new();
        let mut seen: HashSet<char> = HashSet::new();
        for t in texts {
            let t = t.trim();
            let chars = t.chars().filter(|c| !c.is_whitespace()).count();
            if chars >= 4 {
                long += 1;
                if t.contains(char::is_whitespace) {
                    spaced += 1;
                }
            }
            seen.clear();
            for c in t.chars() {
                if is_mark(c) {
                    seen.insert(c);
                } else if c.is_ascii_alphanumeric() {
                    ascii += 1;
                } else if is_full_width_alnum(c) {
                    full += 1;
                }
            }
            if !seen.is_empty() {
                with_mark += 1;
            }
            for &c in &seen {
                *mark_sentences.entry(c).or_default() += 1;
            }
        }
        let segmented = long > 0 && spaced * 2 >= long;
        let punctuation = if n > 0 && with_mark * 2 >= n {
            Punctuation::Kept
        } else {
            Punctuation::Removed
        };
        let min_sentences = n.div_ceil(1000).max(2);
        let kept_marks: String = match punctuation {
            Punctuation::Kept => String::new(),
            Punctuation::Removed => mark_sentences
                .iter()
                .filter(|(_, &k)| k >= min_sentences)
                .map(|(&c, _)| c)
                .collect(),
        };
        let width = if full >= 20 && full >= 9 * ascii {
            Width::Full
        } else if ascii >= 20 && ascii >= 9 * full {
            Width::Half
        } else {
            Width::Any
        };
        let counts = if segmented {
            let mut counts: HashMap<String, u64> = HashMap::new();
            for t in texts {
                for w in t.split_whitespace() {
                    *counts.entry(w.to_string()).or_default() += 1;
                }
            }
            counts
        } else {
            jieba_counts(texts)
        };
        let (dropped, split) = dropped_and_split(&counts);
        TextStyle {
            segmented,
            punctuation,
            kept_marks,
            width,
            dropped,
            split,
        }
    }
}

/// Whether `c` is a full-width Latin letter or digit (U+FF10–FF19, FF21–FF3A, FF41–FF5A).
pub(super) fn is_full_width_alnum(c: char) -> bool {
    matches!(c, '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}')
}

/// Word counts of unsegmented texts, as jieba's default dictionary cuts them (marks and
/// whitespace not counted).
fn jieba_counts(texts: &[&str]) -> HashMap<String, u64> {
    let jieba = super::default_jieba();
    let mut counts: HashMap<String, u64> = HashMap::new();
    for t in texts {
        for tok in jieba.cut(t, false) {
            if tok.word.chars().any(|c| !is_mark(c) && !c.is_whitespace()) {
                *counts.entry(tok.word.to_string()).or_default() += 1;
            }
        }
    }
    counts
}

/// One of the most frequent words of jieba's dictionary.
pub(super) struct Frequent {
    pub(super) word: &'static str,
    pub(super) freq: u64,
    pub(super) tag: &'static str,
}

/// The 1,000 most frequent words of jieba's dictionary (`jieba_frequent.txt`, written by
/// `scripts/jieba_frequent.sh`), most frequent first, and the dictionary's total frequency.
pub(super) fn frequent_words() -> &'static (Vec<Frequent>, u64) {
    static LIST: OnceLock<(Vec<Frequent>, u64)> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut total = 0;
        let mut words = Vec::new();
        for line in include_str!("jieba_frequent.txt").lines() {
            if let Some(t) = line.strip_prefix("# total ") {
                total = t.trim().parse().unwrap_or(0);
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let mut it = line.split(' ');
            if let (Some(word), Some(freq), Some(tag)) = (it.next(), it.next(), it.next()) {
                words.push(Frequent {
                    word,
                    freq: freq.parse().unwrap_or(0),
                    tag,
                });
            }
        }
        (words, total)
    })
}

/// Part-of-speech tags of function words (and verbs): the words a cleaning drops. Nouns,
/// names, idioms and time words are never taken for dropped words.
fn function_tag(tag: &str) -> bool {
    matches!(
        tag,
        "r" | "rr"
            | "rz"
            | "rg"
            | "p"
            | "c"
            | "u"
            | "uj"
            | "ul"
            | "uz"
            | "ud"
            | "ug"
            | "uv"
            | "d"
            | "dg"
            | "f"
            | "m"
            | "mq"
            | "q"
            | "v"
            | "vd"
            | "vg"
            | "y"
            | "e"
            | "o"
            | "k"
            | "h"
    )
}

/// How often the dictionary must predict a word in a corpus of its size before its absence
/// counts (see [`TextStyle::derive`]).
const MIN_EXPECTED: f64 = 50.0;

/// The dropped and the split words of a corpus with these word counts (see
/// [`TextStyle::derive`]), most frequent in jieba's dictionary first.
fn dropped_and_split(counts: &HashMap<String, u64>) -> (Vec<String>, Vec<String>) {
    let (list, total) = frequent_words();
    let n: u64 = counts.values().sum();
    if n == 0 || *total == 0 {
        return (Vec::new(), Vec::new());
    }
    let seen = |w: &str| counts.get(w).copied().unwrap_or(0);
    let expected = |freq: u64| n as f64 * freq as f64 / *total as f64;
    let candidates: Vec<&Frequent> = list
        .iter()
        .filter(|f| {
            let e = expected(f.freq);
            e >= MIN_EXPECTED && (seen(f.word) as f64) < 0.01 * e
        })
        .collect();
    let is_candidate: HashSet<&str> = candidates.iter().map(|f| f.word).collect();
    let mut dropped = Vec::new();
    let mut split = Vec::new();
    for f in candidates {
        let e = expected(f.freq);
        let chars: Vec<(usize, char)> = f.word.char_indices().collect();
        let written_apart = chars.iter().skip(1).any(|&(at, _)| {
            let (a, b) = f.word.split_at(at);
            let known = |p: &str| seen(p) > 0 || is_candidate.contains(p);
            known(a) && known(b) && (seen(a) as f64 >= e || seen(b) as f64 >= e)
        });
        if written_apart {
            split.push(f.word.to_string());
        } else if function_tag(f.tag) {
            dropped.push(f.word.to_string());
        }
    }
    (dropped, split)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn frequent_list_is_the_linked_jieba_dictionary() {
        let (list, total) = frequent_words();
        assert_eq!(list.len(), 1000);
        assert!(*total > 0);
        assert!(list.windows(2).all(|w| w[0].freq >= w[1].freq));
        let jieba = crate::text::default_jieba();
        for f in list {
            assert!(
                jieba.has_word(f.word),
                "{} is not in jieba's dictionary",
                f.word
            );
            let toks = jieba.cut(f.word, false);
            if toks.len() == 1 {
                // jieba suggests a word's own frequency (+1 from rounding) for a dictionary word.
                let s = jieba.suggest_freq(f.word) as u64;
                assert!(
                    s == f.freq || s == f.freq + 1,
                    "{}: {s} vs {}",
                    f.word,
                    f.freq
                );
                let tags = jieba.tag(f.word, false);
                assert_eq!(tags[0].tag, f.tag, "{}", f.word);
            }
        }
    }

    /// xorshift64*: a deterministic stream for generated corpora.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    /// A corpus of sentences of jieba's frequent words drawn by their frequency (so each
    /// appears about as often as the dictionary predicts), cleaned: `dropped` removed,
    /// 不是 written as 不 是 (and 是 dropped), spaces between words; every 60th sentence ends in
    /// `…` and every 100th holds full-width digits; `with_comma` adds a comma to most.
    fn cleaned_corpus(dropped: &[&str], segmented: bool, with_comma: bool) -> Vec<String> {
        let (list, _) = frequent_words();
        let total: u64 = list.iter().map(|f| f.freq).sum();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut out = Vec::new();
        for i in 0..40_000 {
            let mut words: Vec<&str> = Vec::new();
            for _ in 0..12 {
                let mut r = rng.next() % total;
                let w = list
                    .iter()
                    .find(|f| {
                        if r < f.freq {
                            true
                        } else {
                            r -= f.freq;
                            false
                        }
                    })
                    .map_or("很", |f| f.word);
                match w {
                    "不是" => words.push("不"),
                    w if dropped.contains(&w) || w == "是" => {}
                    w => words.push(w),
                }
            }
            if i % 60 == 0 {
                words.push("…");
            }
            if i % 100 == 0 {
                words.push("２００８");
            }
            if with_comma && i % 4 != 0 {
                words.insert(words.len() / 2, "，");
            }
            out.push(words.join(if segmented { " " } else { "" }));
        }
        out
    }

    #[test]
    fn style_of_a_generated_corpus_names_its_dropped_words() {
        let dropped = ["的", "了", "在", "和"];
        let corpus = cleaned_corpus(&dropped, true, false);
        let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
        let style = TextStyle::derive(&texts);
        assert!(style.segmented);
        assert_eq!(style.punctuation, Punctuation::Removed);
        assert_eq!(style.kept_marks, "…");
        assert_eq!(style.width, Width::Full);
        let mut want: Vec<&str> = dropped.to_vec();
        want.push("是");
        let mut got: Vec<&str> = style.dropped.iter().map(String::as_str).collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "{}", style.describe());
        // 不是 never appears, but 不 does, often: the corpus writes it apart, nothing dropped.
        assert!(
            style.split.iter().any(|w| w == "不是"),
            "{}",
            style.describe()
        );

        // The same corpus as written (no spaces, commas kept): not segmented, punctuation kept.
        let raw = cleaned_corpus(&[], false, true);
        let texts: Vec<&str> = raw.iter().map(String::as_str).collect();
        let style = TextStyle::derive(&texts);
        assert!(!style.segmented);
        assert_eq!(style.punctuation, Punctuation::Kept);
        assert!(
            !style.dropped.iter().any(|w| w == "的" || w == "了"),
            "{style:?}"
        );
    }

    #[test]
    fn describe_names_what_was_found() {
        let s = TextStyle {
            segmented: true,
            punctuation: Punctuation::Removed,
            kept_marks: "…".into(),
            width: Width::Full,
            dropped: vec!["的".into(), "了".into()],
            split: vec![],
        };
        assert_eq!(
            s.describe(),
            "segmented with spaces; punctuation removed (kept: …); full-width letters and digits; dropped words (2): 的 了"
        );
        assert!(TextStyle::as_written()
            .describe()
            .contains("punctuation kept"));
    }
}
