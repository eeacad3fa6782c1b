//! Sanitizing LLM rationales: keep the reason part, strip emotion words, parse asserted labels.
//!
//! The seed keeps only the part after "理由:" of an answer shaped like
//! `这段评论包含以下分类:\n<labels>\n\n理由:…` and deletes emotion words, so the knowledge hints
//! at the emotion without copying the answer (less label leakage, more trust). The word list is
//! data ([`Lexicon`], `data/lexicon/emotions.txt`), compiled in and replaceable at run time.

use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use std::collections::HashMap;

/// The lexicon shipped in `data/lexicon/emotions.txt`.
pub const DEFAULT_LEXICON: &str = include_str!("../../data/lexicon/emotions.txt");

/// Emotion words per label, for stripping from rationales.
#[derive(Debug, Clone)]
pub struct Lexicon {
    /// Chinese words per emotion (canonical order).
    words: [Vec<String>; NUM_EMOTIONS],
    /// First char → words starting with it, longest first.
    by_first: HashMap<char, Vec<String>>,
}

impl Default for Lexicon {
    // The shipped lexicon is compiled in and a unit test parses it: this cannot fail at run time.
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        Lexicon::parse(DEFAULT_LEXICON).expect("the shipped lexicon parses")
    }
}

impl Lexicon {
    /// Parses the `Name: word word …` format (see `data/lexicon/emotions.txt`).
    ///
    /// Errors name the 1-based line of an unknown emotion or a line without a colon.
    pub fn parse(text: &str) -> std::result::Result<Lexicon, (usize, String)> {
        let mut words: [Vec<String>; NUM_EMOTIONS] = Default::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, list) = line
                .split_once([':', '：'])
                .ok_or((i + 1, "expected `Emotion: word word …`".to_string()))?;
            let e: Emotion = name.parse().map_err(|e| (i + 1, format!("{e}")))?;
            words[e.index()].extend(list.split_whitespace().map(str::to_string));
        }
        let mut by_first: HashMap<char, Vec<String>> = HashMap::new();
        for w in words.iter().flatten() {
            if let Some(c) = w.chars().next() {
                by_first.entry(c).or_default().push(w.clone());
            }
        }
        for v in by_first.values_mut() {
            v.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
            v.dedup();
        }
        Ok(Lexicon { words, by_first })
    }

    /// The Chinese words listed for `e`.
    pub fn words(&self, e: Emotion) -> &[String] {
        &self.words[e.index()]
    }

    /// Every Chinese word, all emotions.
    pub fn all_words(&self) -> impl Iterator<Item = &str> {
        self.words.iter().flatten().map(String::as_str)
    }

    /// Removes English label names (whole ASCII words, any case) and, unless `names_only`,
    /// every lexicon word (longest match first) from `text`.
    pub fn strip(&self, text: &str, names_only: bool) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        'outer: while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_alphabetic() && (i == 0 || !chars[i - 1].is_ascii_alphabetic()) {
                let end = (i..chars.len())
                    .find(|&j| !chars[j].is_ascii_alphabetic())
                    .unwrap_or(chars.len());
                let word: String = chars[i..end].iter().collect();
                if word.parse::<Emotion>().is_ok() {
                    // "Love:" opening a per-label line goes with its colon.
                    i = end;
                    if i < chars.len() && (chars[i] == ':' || chars[i] == '：') {
                        i += 1;
                    }
                    continue;
                }
                out.push_str(&word);
                i = end;
                continue;
            }
            if !names_only {
                if let Some(cands) = self.by_first.get(&c) {
                    for w in cands {
                        let n = w.chars().count();
                        if i + n <= chars.len() && w.chars().eq(chars[i..i + n].iter().copied()) {
                            i += n;
                            continue 'outer;
                        }
                    }
                }
            }
            out.push(c);
            i += 1;
        }
        out
    }
}

/// The parts of an LLM answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sanitized {
    /// Labels the answer asserts (label line, and label names before 理由).
    pub asserted: LabelSet,
    /// The reason part with label names and emotion words removed.
    pub text: String,
}

/// Byte offset where the reason starts, just after `理由:` / `理由如下:` / `理由是:`.
fn reason_start(raw: &str) -> Option<(usize, usize)> {
    let at = raw.find("理由")?;
    let rest = &raw[at + "理由".len()..];
    // Allow a short connector (如下, 是) before the colon.
    let mut off = 0;
    for (k, c) in rest.char_indices() {
        if c == ':' || c == '：' {
            return Some((at, at + "理由".len() + k + c.len_utf8()));
        }
        if k > 6 || c == '\n' {
            break;
        }
        off = k + c.len_utf8();
    }
    Some((at, at + "理由".len() + off))
}

/// Label names (whole ASCII words) found in `s`, in canonical order.
fn names_in(s: &str) -> LabelSet {
    let mut set = LabelSet::EMPTY;
    for w in s.split(|c: char| !c.is_ascii_alphabetic()) {
        if let Ok(e) = w.parse::<Emotion>() {
            set.insert(e);
        }
    }
    set
}

/// Labels an answer asserts.
///
/// With a 理由 section: every label name before it (the label line and any header sentence).
/// Without: names that open a line as `Name:` (the "Love: …" per-label style), else the names
/// on the first line. Returns the empty set when the answer names no label.
pub fn asserted_labels(raw: &str) -> LabelSet {
    if let Some((at, _)) = reason_start(raw) {
        let head = names_in(&raw[..at]);
        if !head.is_empty() {
            return head;
        }
    }
    let mut set = LabelSet::EMPTY;
    for line in raw.lines() {
        let line = line.trim_start_matches(|c: char| c.is_whitespace() || c == '-' || c == '*');
        if let Some((name, _)) = line.split_once([':', '：']) {
            if let Ok(e) = name.trim().parse::<Emotion>() {
                set.insert(e);
            }
        }
    }
    if set.is_empty() {
        set = names_in(raw.lines().find(|l| !l.trim().is_empty()).unwrap_or(""));
    }
    set
}

/// The reason part of an answer: after 理由, else after the header line(s) naming labels.
pub fn reason_part(raw: &str) -> &str {
    if let Some((_, start)) = reason_start(raw) {
        return &raw[start..];
    }
    // No 理由: drop a leading "…分类:" header line and a bare label line after it.
    let mut rest = raw.trim_start();
    if let Some(nl) = rest.find('\n') {
        let first = &rest[..nl];
        if first.contains("分类") && (first.ends_with(':') || first.ends_with('：')) {
            rest = &rest[nl + 1..];
        }
    }
    rest
}

/// Collapses whitespace runs to one space and trims spaces and quote marks at both ends.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out.trim_matches(|c: char| c.is_whitespace() || c == '"' || c == '“' || c == '”')
        .to_string()
}

/// Sanitizes an LLM answer: parses its asserted labels, keeps the reason part, and strips
/// label names and (unless `names_only`) the lexicon's emotion words.
///
/// ```
/// use emoknow::knowledge::sanitize::{sanitize, Lexicon};
/// let raw = "这段评论包含以下分类:\nJoy\n\n理由:\n\n表达了喜悦之情，属于Joy情绪分类。";
/// let s = sanitize(raw, &Lexicon::default(), false);
/// assert_eq!(s.asserted.to_string(), "Joy");
/// assert_eq!(s.text, "表达了之情，属于情绪分类。");
/// ```
pub fn sanitize(raw: &str, lexicon: &Lexicon, names_only: bool) -> Sanitized {
    Sanitized {
        asserted: asserted_labels(raw),
        text: tidy(&lexicon.strip(reason_part(raw), names_only)),
    }
}

/// Whether an imported value means "nothing here" (the seed writes the literal `nan`).
pub fn is_missing_value(s: &str) -> bool {
    let t = s.trim();
    t.is_empty() || t.eq_ignore_ascii_case("nan") || t.eq_ignore_ascii_case("none") || t == "null"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed README's example: `predict` and the `temp` it shows after sanitizing.
    const SEED_PREDICT: &str = "这段评论包含以下分类:\nLove\n\n理由:\n\n\"可以断言成批中国中国人科学家专家教授艺术家CEO出现杰出华人议员校长州长乃至总统产生就中国人对世界贡献\"这句话中，作者表达了对我国科学家、专家、教授、艺术家、CEO以及杰出华人议员、校长、州长等在世界上做出贡献的赞美。这种赞美和肯定体现了对他们的喜爱和敬仰之情，属于Love（爱）情绪分类。";
    const SEED_TEMP: &str = "可以断言成批中国中国人科学家专家教授艺术家CEO出现杰出华人议员校长州长乃至总统产生就中国人对世界贡献\"这句话中，作者表达了对我国科学家、专家、教授、艺术家、CEO以及杰出华人议员、校长、州长等在世界上做出贡献的赞美。这种赞美和肯定体现了对他们的喜爱和敬仰之情，属于（爱）情绪分类。";

    #[test]
    fn reproduces_the_seed_readme_example_with_names_only() {
        let s = sanitize(SEED_PREDICT, &Lexicon::default(), true);
        assert_eq!(s.text, SEED_TEMP);
        assert_eq!(s.asserted.to_string(), "Love");
    }

    #[test]
    fn full_sanitizing_leaves_no_label_word() {
        let lex = Lexicon::default();
        let s = sanitize(SEED_PREDICT, &lex, false);
        for w in lex.all_words() {
            assert!(!s.text.contains(w), "{w} left in {}", s.text);
        }
        assert!(!s.text.contains("Love"));
        // Only emotion words go: the seed's content stays.
        assert!(s.text.starts_with("可以断言成批中国"));
        assert!(s.text.ends_with("属于（爱）情绪分类。"));
    }

    #[test]
    fn asserted_labels_from_label_line_and_header() {
        let raw =
            "这段评论包含以下分类:\nJoy,Expect\n\n理由:\n\n表明…属于Love? 不，这属于Expect分类。";
        assert_eq!(asserted_labels(raw).to_string(), "Joy,Expect");
        let raw = "此评论可以被分类为Love和Surprise。\n\n理由如下:\n\n描述…Hate";
        assert_eq!(asserted_labels(raw).to_string(), "Love,Surprise");
        assert_eq!(reason_part(raw), "\n\n描述…Hate");
    }

    #[test]
    fn asserted_labels_per_label_style_without_reason() {
        let raw = "这段评论包含以下分类:\n\nExpect: \"恳请有关部门\"表达了期待。\nAnxiety: 担忧。\nHate: 厌恶。\n\n综上所述";
        assert_eq!(asserted_labels(raw).to_string(), "Anxiety,Expect,Hate");
        let s = sanitize(raw, &Lexicon::default(), false);
        assert!(
            !s.text.contains("Expect") && !s.text.contains("担忧"),
            "{}",
            s.text
        );
        assert!(s.text.starts_with("恳请有关部门\""), "{}", s.text);
    }

    #[test]
    fn header_only_and_garbage() {
        assert_eq!(
            asserted_labels("这段评论包含以下分类: Love").to_string(),
            "Love"
        );
        assert!(asserted_labels("生活而 带来 生活而 带来").is_empty());
        assert!(asserted_labels("Lovely weather; unexpected").is_empty());
    }

    #[test]
    fn longest_match_wins_and_ascii_words_stay() {
        let lex = Lexicon::parse("Joy: 喜悦 欣喜若狂\nSurprise: 惊喜\n").unwrap();
        assert_eq!(
            lex.strip("他欣喜若狂，满是惊喜。Lovely Joy!", false),
            "他，满是。Lovely !"
        );
    }

    #[test]
    fn lexicon_errors_name_the_line() {
        assert_eq!(
            Lexicon::parse("# c\nJoy: 喜悦\nHappy: 开心").unwrap_err().0,
            3
        );
        assert_eq!(Lexicon::parse("喜悦").unwrap_err().0, 1);
    }

    #[test]
    fn missing_values() {
        assert!(is_missing_value("nan") && is_missing_value("  ") && is_missing_value("NaN"));
        assert!(!is_missing_value("这段评论"));
    }
}
