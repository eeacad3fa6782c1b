//! [`Normalizer`]: new text into a corpus's [`TextStyle`], and the corpus [`Vocabulary`] its
//! segmenter follows.

use super::style::{frequent_words, is_full_width_alnum};
use super::{is_mark, TextStyle, Width};
use jieba_rs::Jieba;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::OnceLock;

/// How much more a word of the corpus weighs in segmentation than the same share of jieba's
/// dictionary: 100, chosen on validation sentences with their spaces removed (the corpus's own
/// segmentation recovered: F1 .870 with jieba's dictionary and corpus words at their share,
/// .891 at ×10, .900 at ×100, .898 at ×1000; rows 24001–26000 against a vocabulary of rows
/// 1001–24000).
const CORPUS_WEIGHT: f64 = 100.0;

/// A corpus word made of a dropped word and a word the corpus writes at least this many times
/// as often (我很 beside 很) is the corpus segmenter's slip: new text is cut between the two.
const SLIP_RATIO: u64 = 20;

/// The words of a corpus (as its models read them) with their counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vocabulary {
    counts: HashMap<String, u64>,
}

impl Vocabulary {
    /// Counts the whitespace-separated words of `texts`.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vocabulary {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for t in texts {
            for w in t.split_whitespace() {
                match counts.get_mut(w) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(w.to_string(), 1);
                    }
                }
            }
        }
        Vocabulary { counts }
    }

    /// How often the corpus writes `word` (0: never).
    pub fn count(&self, word: &str) -> u64 {
        self.counts.get(word).copied().unwrap_or(0)
    }

    /// Distinct words.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether there is no word.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Words and counts, most frequent first (ties by word).
    pub fn sorted(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.counts.iter().map(|(w, &c)| (w.as_str(), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v
    }

    /// Writes `word<TAB>count` lines, most frequent first.
    pub fn write(&self, path: &Path) -> crate::Result<()> {
        let io = |e| crate::Error::io(path, e);
        let f = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::new(f);
        for (word, count) in self.sorted() {
            writeln!(w, "{word}\t{count}").map_err(io)?;
        }
        w.flush().map_err(io)
    }

    /// Reads what [`Vocabulary::write`] wrote; a malformed line is an error naming it.
    pub fn read(path: &Path) -> crate::Result<Vocabulary> {
        let f = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
        let mut counts = HashMap::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| crate::Error::io(path, e))?;
            let parsed = line
                .split_once('\t')
                .and_then(|(w, c)| Some((w, c.parse::<u64>().ok()?)))
                .filter(|(w, _)| !w.is_empty() && !w.contains(char::is_whitespace));
            let Some((w, c)) = parsed else {
                return Err(crate::Error::input(
                    path,
                    i + 1,
                    "expected `word<TAB>count`: not a vocabulary file emoknow wrote",
                ));
            };
            counts.insert(w.to_string(), c);
        }
        Ok(Vocabulary { counts })
    }
}

/// Brings text into a [`TextStyle`]:
///
/// 1. Latin letters and digits to the style's width; marks the style does not keep become
///    word boundaries, as do control characters.
/// 2. Words: a whitespace-separated chunk the corpus writes as one word stays whole; any other
///    chunk is cut by jieba (no HMM) with the corpus's words weighted up (see
///    [`CORPUS_WEIGHT`]), the style's `split` words and the corpus segmenter's slips cut
///    apart. (Unsegmented styles without dropped words are not cut.)
/// 3. The style's dropped words are removed.
/// 4. Words are joined by one space (segmented styles), else without spaces between CJK
///    characters.
///
/// A text already in the style comes out unchanged (each chunk is a corpus word), and the
/// output of a normalization is its own normalization (jieba's best cut of a word it produced
/// is that word).
#[derive(Debug)]
pub struct Normalizer {
    style: TextStyle,
    vocab: Vocabulary,
    dropped: HashSet<String>,
    jieba: OnceLock<Jieba>,
}

/// `c` at the style's width.
fn to_width(c: char, width: Width) -> char {
    match width {
        Width::Any => c,
        Width::Full if ('!'..='~').contains(&c) => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
        Width::Half if ('\u{FF01}'..='\u{FF5E}').contains(&c) => {
            char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
        }
        _ => c,
    }
}

/// Full-width letters and digits as ASCII, so jieba keeps a run of them together (it does for
/// ASCII, not for full-width forms); everything else unchanged, one char for one.
fn fold_for_jieba(s: &str) -> String {
    s.chars()
        .map(|c| {
            if is_full_width_alnum(c) {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

impl Clone for Normalizer {
    /// The same style and vocabulary (the segmenter is built again on first use).
    fn clone(&self) -> Normalizer {
        Normalizer::new(self.style.clone(), self.vocab.clone())
    }
}

impl Normalizer {
    /// A normalizer into `style`, segmenting like the corpus whose words `vocab` counts.
    pub fn new(style: TextStyle, vocab: Vocabulary) -> Normalizer {
        let dropped = style.dropped.iter().cloned().collect();
        Normalizer {
            style,
            vocab,
            dropped,
            jieba: OnceLock::new(),
        }
    }

    /// The style.
    pub fn style(&self) -> &TextStyle {
        &self.style
    }

    /// The corpus vocabulary it segments with.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    /// The segmenter: jieba's dictionary, the corpus's words weighted up, the words the
    /// corpus writes apart cut (built on first use: ~0.2 s).
    fn jieba(&self) -> &Jieba {
        self.jieba.get_or_init(|| {
            let mut j = Jieba::new();
            let (frequent, total) = frequent_words();
            let n: u64 = self.vocab.counts.values().sum();
            // Jieba never cuts to a word of frequency 0 only by accident of the route (a
            // zero's log is -inf); 1 makes the word all but never chosen, and never forced.
            let apart = |j: &mut Jieba, w: &str| {
                j.add_word(&fold_for_jieba(w), Some(1), None);
            };
            if n > 0 {
                let words = self.vocab.sorted();
                // Slips: corpus words jieba's dictionary does not hold (asked before the
                // corpus's words join it), made of a dropped word and a much commoner word.
                let slips: Vec<&str> = words
                    .iter()
                    .filter(|(w, c)| {
                        !self.dropped.contains(*w)
                            && !j.has_word(w)
                            && self.dropped.iter().any(|d| {
                                let rest = w
                                    .strip_prefix(d.as_str())
                                    .or_else(|| w.strip_suffix(d.as_str()));
                                rest.is_some_and(|r| {
                                    !r.is_empty() && self.vocab.count(r) >= SLIP_RATIO * c
                                })
                            })
                    })
                    .map(|(w, _)| *w)
                    .collect();
                // A corpus word weighs the larger of its weighted count and the dictionary's
                // frequency (known for the dictionary's 1,000 most frequent words; any other
                // is below a single weighted occurrence in corpora under ~700,000 words).
                let own: HashMap<&str, u64> = frequent.iter().map(|f| (f.word, f.freq)).collect();
                let scale = *total as f64 / n as f64 * CORPUS_WEIGHT;
                for (w, c) in &words {
                    let weighted = (*c as f64 * scale).round() as u64;
                    let freq = weighted.max(own.get(w).copied().unwrap_or(0));
                    j.add_word(&fold_for_jieba(w), Some(freq as usize), None);
                }
                for w in slips {
                    apart(&mut j, w);
                }
            }
            for w in &self.style.split {
                apart(&mut j, w);
            }
            j
        })
    }

    /// Whether normalizing needs words (segmentation, or dropping words).
    fn cuts(&self) -> bool {
        self.style.segmented || !self.dropped.is_empty()
    }

    /// `text` in the style.
    pub fn normalize(&self, text: &str) -> String {
        let width = self.style.width;
        let mapped: String = text
            .chars()
            .map(|c| to_width(c, width))
            .map(|c| {
                if c.is_control() || (is_mark(c) && !self.style.keeps_mark(c)) {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let mut words: Vec<String> = Vec::new();
        for chunk in mapped.split_whitespace() {
            let whole = !self.cuts()
                || self.vocab.count(chunk) > 0
                || chunk.chars().nth(1).is_none()
                || chunk.chars().all(is_mark);
            if whole {
                words.push(chunk.to_string());
                continue;
            }
            let chars: Vec<char> = chunk.chars().collect();
            for tok in self.jieba().cut(&fold_for_jieba(chunk), false) {
                // The token's characters as written (folding keeps one char for one).
                let w: String = chars
                    .get(tok.start..tok.end)
                    .map_or_else(|| tok.word.to_string(), |c| c.iter().collect());
                if !w.trim().is_empty() {
                    words.push(w);
                }
            }
        }
        words.retain(|w| !self.dropped.contains(w));
        if self.style.segmented {
            return words.join(" ");
        }
        let mut out = String::new();
        for w in words {
            let joins = match (out.chars().next_back(), w.chars().next()) {
                (Some(a), Some(b)) => super::is_cjk(a) || super::is_cjk(b),
                _ => true,
            };
            if !joins {
                out.push(' ');
            }
            out.push_str(&w);
        }
        out
    }

    /// Each of `texts` in the style.
    pub fn normalize_all(&self, texts: &[String]) -> Vec<String> {
        texts.iter().map(|t| self.normalize(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Punctuation;

    /// A seed-like style: segmented, punctuation removed but `…`, full width, the seed's
    /// dropped words.
    fn seed_style() -> TextStyle {
        TextStyle {
            segmented: true,
            punctuation: Punctuation::Removed,
            kept_marks: "…".into(),
            width: Width::Full,
            dropped: "的 了 是 在 我 我们 有 要 自己 一 两 个 中 之 位 到 后 将 或 某"
                .split(' ')
                .map(String::from)
                .collect(),
            split: vec!["不是".into()],
        }
    }

    fn seed_vocab() -> Vocabulary {
        Vocabulary::from_texts([
            "很 担心 明天 考试",
            "现在 好 终于 如愿以偿",
            "孩子 们 笑 很 开心 …",
            "不 知道 为什么 很 难过",
            "考试 成绩 不 好",
            "我很 想念 你",
            "很 很 很 很 很 很 很 很 很 很 很 很 很 很 很 很 很 很 很 很 很",
        ])
    }

    #[test]
    fn text_as_written_reaches_the_corpus_style() {
        let n = Normalizer::new(seed_style(), seed_vocab());
        assert_eq!(n.normalize("我很担心明天的考试。"), "很 担心 明天 考试");
        assert_eq!(n.normalize("很 担心 明天 考试"), "很 担心 明天 考试");
        // Marks become boundaries; the kept mark stays; ASCII to full width.
        assert_eq!(
            n.normalize("孩子们笑得很开心…OK!"),
            "孩子 们 笑 得 很 开心 … ＯＫ"
        );
        // A word the corpus writes apart.
        assert_eq!(n.normalize("这不是考试"), "这 不 考试");
        // A corpus word typed with spaces stays whole (我很 is one here).
        assert_eq!(n.normalize("我很 想念 你"), "我很 想念 你");
    }

    #[test]
    fn normalizing_is_idempotent() {
        let n = Normalizer::new(seed_style(), seed_vocab());
        for t in [
            "我很担心明天的考试。",
            "她们都睡了，我蹑手蹑脚摸黑上了床，凑上去想亲嫣一下。",
            "现在好了，我终于如愿以偿！",
            "2008年的BP机，……还在吗？",
            "  ",
            "的了是",
            "我 现在好",
        ] {
            let once = n.normalize(t);
            assert_eq!(n.normalize(&once), once, "{t}");
        }
    }

    #[test]
    fn normalizing_random_text_twice_is_normalizing_once() {
        let n = Normalizer::new(seed_style(), seed_vocab());
        let raw = Normalizer::new(TextStyle::as_written(), Vocabulary::default());
        let pool: Vec<char> = "我很担心明天的考试现在好了终于如愿以偿孩子们笑得开心不是知道为什么难过成绩                               ，。！？…“”、 　AbZ09０９ＱＸ-._%#~\t"
            .chars()
            .collect();
        let mut rng = crate::text::style::tests::Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..3000 {
            let len = (rng.next() % 24) as usize;
            let t: String = (0..len)
                .map(|_| pool[(rng.next() % pool.len() as u64) as usize])
                .collect();
            for norm in [&n, &raw] {
                let once = norm.normalize(&t);
                assert_eq!(norm.normalize(&once), once, "{t:?}");
            }
        }
    }

    #[test]
    fn unsegmented_styles_join_words() {
        let n = Normalizer::new(TextStyle::as_written(), Vocabulary::default());
        assert_eq!(n.normalize("很 担心 明天 考试。"), "很担心明天考试。");
        assert_eq!(n.normalize("我说 hello world 了"), "我说hello world了");
        assert_eq!(n.normalize("我很担心明天的考试。"), "我很担心明天的考试。");
    }

    #[test]
    fn vocabulary_round_trips_and_refuses_garbage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.tsv");
        let v = seed_vocab();
        v.write(&p).unwrap();
        assert_eq!(Vocabulary::read(&p).unwrap(), v);
        std::fs::write(&p, "很\t3\nbad line\n").unwrap();
        let e = Vocabulary::read(&p).unwrap_err().to_string();
        assert!(e.contains("v.tsv:2:"), "{e}");
    }
}
