//! Text as people write it, and as a corpus was written.
//!
//! A corpus is often cleaned before anyone labels it: the seed's sentences are word-segmented
//! with spaces, most punctuation is removed and about twenty very frequent words (的, 了, 是, 在,
//! 我 …) are dropped, so `我很担心明天的考试。` stands in it as `很 担心 明天 考试`. A model trained
//! on such text reads a sentence typed as written badly. This module holds:
//!
//! - [`TextStyle`]: how a corpus is written, learned from the corpus itself at ingest
//!   ([`TextStyle::derive`]) or declared by the user, recorded in the store and in every model's
//!   `meta.json`.
//! - [`Normalizer`]: the one function that brings any new text into a style (jieba segmentation
//!   with the corpus's own vocabulary, the marks the corpus keeps, its letter width, the words
//!   its cleaning dropped). Text already in the style comes out unchanged, and normalizing twice
//!   is normalizing once.
//! - [`Vocabulary`]: the words of a corpus and their counts, which the segmenter follows so
//!   that new text is cut into words the way the corpus was.

mod normalize;
mod style;

pub use normalize::{Normalizer, Vocabulary};
pub use style::{Punctuation, TextStyle, Width};

/// Whether `c` is a punctuation mark or symbol: neither a letter, a digit, whitespace nor a
/// control character (so CJK ideographs, kana and full-width letters and digits are not).
pub fn is_mark(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

/// Whether `c` is a CJK character (ideographs, kana, CJK marks): no space is written between
/// two of them in unsegmented text.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{2E80}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7AF}' | '\u{F900}'..='\u{FAFF}'
        | '\u{FE30}'..='\u{FE4F}' | '\u{FF00}'..='\u{FFEF}' | '\u{20000}'..='\u{3FFFF}')
}

/// jieba with its default dictionary, loaded once (~0.15 s).
pub(crate) fn default_jieba() -> &'static jieba_rs::Jieba {
    static JIEBA: std::sync::OnceLock<jieba_rs::Jieba> = std::sync::OnceLock::new();
    JIEBA.get_or_init(jieba_rs::Jieba::new)
}
