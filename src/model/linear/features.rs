//! The linear model's features: tokenizing a text (whitespace-separated words; characters with
//! whitespace removed), word and character n-grams, term statistics and the selected
//! vocabulary, and the [`Featurizer`] that maps a text to its sparse TF-IDF row (sublinear tf,
//! smoothed idf, each block L2-normalized).

use super::LinearConfig;
use std::collections::HashMap;

/// Calls `f` with every word n-gram (n = 1..=max_n) of `words`, joined by one space.
fn for_each_word_gram(words: &[&str], max_n: usize, buf: &mut String, mut f: impl FnMut(&str)) {
    for i in 0..words.len() {
        buf.clear();
        for n in 1..=max_n.min(words.len() - i) {
            if n > 1 {
                buf.push(' ');
            }
            buf.push_str(words[i + n - 1]);
            f(buf);
        }
    }
}

/// Calls `f` with every character n-gram (n = min..=max) of `chars`.
fn for_each_char_gram(
    chars: &[char],
    min: usize,
    max: usize,
    buf: &mut String,
    mut f: impl FnMut(&str),
) {
    for i in 0..chars.len() {
        buf.clear();
        for n in 1..=max.min(chars.len() - i) {
            buf.push(chars[i + n - 1]);
            if n >= min {
                f(buf);
            }
        }
    }
}

/// A text split the way both blocks need it.
struct Tokens<'a> {
    words: Vec<&'a str>,
    chars: Vec<char>,
}

fn tokenize(lower: &str) -> Tokens<'_> {
    Tokens {
        words: lower.split_whitespace().collect(),
        chars: lower.chars().filter(|c| !c.is_whitespace()).collect(),
    }
}

/// The fitted vocabulary and idf: maps a text to a sparse, normalized feature row.
#[derive(Debug, Clone)]
pub(super) struct Featurizer {
    pub(super) word_ngrams: usize,
    pub(super) char_min: usize,
    pub(super) char_max: usize,
    pub(super) word_terms: Vec<String>,
    pub(super) char_terms: Vec<String>,
    pub(super) word_index: HashMap<String, u32>,
    pub(super) char_index: HashMap<String, u32>,
    /// idf of every feature: word block first, then char block.
    pub(super) idf: Vec<f32>,
}

#[derive(Default)]
struct TermStat {
    df: u32,
    tf: u64,
    last_doc: u32,
}

fn count_term(stats: &mut HashMap<String, TermStat>, term: &str, doc: u32) {
    let s = match stats.get_mut(term) {
        Some(s) => s,
        None => stats.entry(term.to_owned()).or_insert(TermStat {
            df: 0,
            tf: 0,
            last_doc: u32::MAX,
        }),
    };
    s.tf += 1;
    if s.last_doc != doc {
        s.last_doc = doc;
        s.df += 1;
    }
}

/// Keeps terms with df >= min_df, then the `max_features` most frequent (ties by term), and
/// returns them sorted by term (a deterministic feature order) with their df.
fn select_terms(
    stats: HashMap<String, TermStat>,
    min_df: usize,
    max_features: usize,
) -> Vec<(String, u32)> {
    let mut kept: Vec<(String, TermStat)> = stats
        .into_iter()
        .filter(|(_, s)| s.df as usize >= min_df)
        .collect();
    if max_features > 0 && kept.len() > max_features {
        kept.sort_by(|a, b| b.1.tf.cmp(&a.1.tf).then_with(|| a.0.cmp(&b.0)));
        kept.truncate(max_features);
    }
    let mut out: Vec<(String, u32)> = kept.into_iter().map(|(t, s)| (t, s.df)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn smooth_idf(n_docs: usize, df: u32) -> f32 {
    (((1 + n_docs) as f64 / (1 + df as usize) as f64).ln() + 1.0) as f32
}

pub(super) fn index_of(terms: &[String]) -> HashMap<String, u32> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

impl Featurizer {
    pub(super) fn fit(texts: &[&str], cfg: &LinearConfig) -> Featurizer {
        let mut word_stats: HashMap<String, TermStat> = HashMap::new();
        let mut char_stats: HashMap<String, TermStat> = HashMap::new();
        let mut buf = String::new();
        for (d, text) in texts.iter().enumerate() {
            let lower = text.to_lowercase();
            let tok = tokenize(&lower);
            let d = d as u32;
            if cfg.word_ngrams > 0 {
                for_each_word_gram(&tok.words, cfg.word_ngrams, &mut buf, |t| {
                    count_term(&mut word_stats, t, d)
                });
            }
            if cfg.char_ngram_max > 0 {
                for_each_char_gram(
                    &tok.chars,
                    cfg.char_ngram_min,
                    cfg.char_ngram_max,
                    &mut buf,
                    |t| count_term(&mut char_stats, t, d),
                );
            }
        }
        let words = select_terms(word_stats, cfg.min_df, cfg.max_features);
        let chars = select_terms(char_stats, cfg.min_df, cfg.max_features);
        let idf = words
            .iter()
            .chain(&chars)
            .map(|(_, df)| smooth_idf(texts.len(), *df))
            .collect();
        let word_terms: Vec<String> = words.into_iter().map(|(t, _)| t).collect();
        let char_terms: Vec<String> = chars.into_iter().map(|(t, _)| t).collect();
        Featurizer {
            word_ngrams: cfg.word_ngrams,
            char_min: cfg.char_ngram_min,
            char_max: cfg.char_ngram_max,
            word_index: index_of(&word_terms),
            char_index: index_of(&char_terms),
            word_terms,
            char_terms,
            idf,
        }
    }

    pub(super) fn n_features(&self) -> usize {
        self.word_terms.len() + self.char_terms.len()
    }

    /// The sparse feature row of `text`: sorted feature ids and values.
    pub(super) fn vectorize(&self, text: &str) -> (Vec<u32>, Vec<f32>) {
        let lower = text.to_lowercase();
        let tok = tokenize(&lower);
        let mut buf = String::new();
        let mut words = Vec::new();
        let mut chars = Vec::new();
        if self.word_ngrams > 0 {
            for_each_word_gram(&tok.words, self.word_ngrams, &mut buf, |t| {
                if let Some(&i) = self.word_index.get(t) {
                    words.push(i);
                }
            });
        }
        if self.char_max > 0 {
            let offset = self.word_terms.len() as u32;
            for_each_char_gram(&tok.chars, self.char_min, self.char_max, &mut buf, |t| {
                if let Some(&i) = self.char_index.get(t) {
                    chars.push(offset + i);
                }
            });
        }
        let mut ids = Vec::with_capacity(words.len() + chars.len());
        let mut vals = Vec::with_capacity(words.len() + chars.len());
        for block in [words, chars] {
            self.push_block(block, &mut ids, &mut vals);
        }
        (ids, vals)
    }

    /// Appends one block's tf-idf values, L2-normalized.
    fn push_block(&self, mut block: Vec<u32>, ids: &mut Vec<u32>, vals: &mut Vec<f32>) {
        block.sort_unstable();
        let start = vals.len();
        let mut i = 0;
        while i < block.len() {
            let id = block[i];
            let mut j = i;
            while j < block.len() && block[j] == id {
                j += 1;
            }
            let tf = (j - i) as f32;
            ids.push(id);
            vals.push((1.0 + tf.ln()) * self.idf[id as usize]);
            i = j;
        }
        let norm = vals[start..].iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            let scale = 1.0 / norm;
            for v in &mut vals[start..] {
                *v *= scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_tfidf_with_sublinear_tf_and_l2_norm() {
        // Two docs; "a" in both (df 2), "b" only in the first (df 1). Words only, unigrams.
        let cfg = LinearConfig {
            word_ngrams: 1,
            char_ngram_max: 0,
            min_df: 1,
            ..LinearConfig::default()
        };
        let feat = Featurizer::fit(&["a b b", "a"], &cfg);
        assert_eq!(feat.word_terms, ["a", "b"]);
        // idf(a) = ln(3/3) + 1 = 1; idf(b) = ln(3/2) + 1
        let idf_b = (1.5f64).ln() + 1.0;
        let (ids, vals) = feat.vectorize("a b b");
        // tf: a 1 -> 1, b 2 -> 1 + ln 2
        let raw = [1.0, (1.0 + 2f64.ln()) * idf_b];
        let norm = (raw[0] * raw[0] + raw[1] * raw[1]).sqrt();
        assert_eq!(ids, [0, 1]);
        let r4 = |x: f64| (x * 1e4).round() / 1e4;
        assert_eq!(r4(vals[0] as f64), r4(raw[0] / norm));
        assert_eq!(r4(vals[1] as f64), r4(raw[1] / norm));
        // Unknown words give an empty row.
        assert!(feat.vectorize("zzz").0.is_empty());
    }

    #[test]
    fn grams_cover_words_bigrams_and_chars_without_spaces() {
        let mut buf = String::new();
        let mut w = Vec::new();
        for_each_word_gram(&["我", "很", "开心"], 2, &mut buf, |t| {
            w.push(t.to_string())
        });
        assert_eq!(w, ["我", "我 很", "很", "很 开心", "开心"]);
        let chars: Vec<char> = "我很开心".chars().collect();
        let mut c = Vec::new();
        for_each_char_gram(&chars, 2, 3, &mut buf, |t| c.push(t.to_string()));
        assert_eq!(c, ["我很", "我很开", "很开", "很开心", "开心"]);
    }
}
