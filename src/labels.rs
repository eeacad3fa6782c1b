//! The shared vocabulary: the eight emotions and sets of them.
//!
//! Everything that reads or writes labels goes through [`Emotion`] and [`LabelSet`], keyed by
//! emotion *name*: sources order their label columns differently, so a column position never
//! identifies a label. This module imports nothing from the rest of the crate.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One of the eight emotions of the corpus, in the seed's canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Emotion {
    /// 喜爱
    Love,
    /// 喜悦
    Joy,
    /// 焦虑
    Anxiety,
    /// 悲伤
    Sorrow,
    /// 期待
    Expect,
    /// 厌恶
    Hate,
    /// 惊讶
    Surprise,
    /// 愤怒
    Anger,
}

/// Number of emotions.
pub const NUM_EMOTIONS: usize = 8;

impl Emotion {
    /// All emotions in canonical order (the seed's column order).
    pub const ALL: [Emotion; NUM_EMOTIONS] = [
        Emotion::Love,
        Emotion::Joy,
        Emotion::Anxiety,
        Emotion::Sorrow,
        Emotion::Expect,
        Emotion::Hate,
        Emotion::Surprise,
        Emotion::Anger,
    ];

    /// Position in canonical order, 0..8.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The emotion at canonical position `i`. Panics if `i >= 8`.
    pub fn from_index(i: usize) -> Emotion {
        Emotion::ALL[i]
    }

    /// English name as used in the corpus (`"Love"`).
    pub fn name(self) -> &'static str {
        match self {
            Emotion::Love => "Love",
            Emotion::Joy => "Joy",
            Emotion::Anxiety => "Anxiety",
            Emotion::Sorrow => "Sorrow",
            Emotion::Expect => "Expect",
            Emotion::Hate => "Hate",
            Emotion::Surprise => "Surprise",
            Emotion::Anger => "Anger",
        }
    }

    /// The Chinese name used in help text and rendered knowledge (`"喜爱"`).
    pub fn chinese(self) -> &'static str {
        match self {
            Emotion::Love => "喜爱",
            Emotion::Joy => "喜悦",
            Emotion::Anxiety => "焦虑",
            Emotion::Sorrow => "悲伤",
            Emotion::Expect => "期待",
            Emotion::Hate => "厌恶",
            Emotion::Surprise => "惊讶",
            Emotion::Anger => "愤怒",
        }
    }
}

impl fmt::Display for Emotion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a string that names no emotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEmotion(pub String);

impl fmt::Display for UnknownEmotion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown emotion {:?} (expected one of Love, Joy, Anxiety, Sorrow, Expect, Hate, Surprise, Anger)",
            self.0
        )
    }
}

impl std::error::Error for UnknownEmotion {}

impl FromStr for Emotion {
    type Err = UnknownEmotion;

    /// Parses an English name case-insensitively (`love`, `'Love'`) or the Chinese name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_matches(|c| c == '\'' || c == '"' || c == '`');
        for e in Emotion::ALL {
            if t.eq_ignore_ascii_case(e.name()) || t == e.chinese() {
                return Ok(e);
            }
        }
        Err(UnknownEmotion(s.to_string()))
    }
}

/// A set of emotions, stored as a bit mask (bit `i` = `Emotion::from_index(i)`).
///
/// Serializes as a list of names in human-readable formats (JSON) and as one byte in binary
/// ones (bincode, the store).
///
/// ```
/// use emoknow::labels::{Emotion, LabelSet};
/// let s: LabelSet = "['Love', 'Joy']".parse().unwrap();
/// assert!(s.contains(Emotion::Joy));
/// assert_eq!(s.to_string(), "Love,Joy");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LabelSet(pub u8);

impl LabelSet {
    /// The empty set.
    pub const EMPTY: LabelSet = LabelSet(0);

    /// Builds a set from emotions.
    pub fn from_emotions<I: IntoIterator<Item = Emotion>>(it: I) -> LabelSet {
        let mut s = LabelSet::EMPTY;
        for e in it {
            s.insert(e);
        }
        s
    }

    /// Builds a set from 8 booleans in canonical order.
    pub fn from_bools(b: &[bool; NUM_EMOTIONS]) -> LabelSet {
        LabelSet::from_emotions(Emotion::ALL.into_iter().filter(|e| b[e.index()]))
    }

    /// Adds an emotion.
    pub fn insert(&mut self, e: Emotion) {
        self.0 |= 1 << e.index();
    }

    /// Whether the set holds `e`.
    pub fn contains(self, e: Emotion) -> bool {
        self.0 & (1 << e.index()) != 0
    }

    /// Whether every emotion of `other` is in `self`.
    pub fn is_superset(self, other: LabelSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// Number of emotions in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The emotions in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Emotion> {
        Emotion::ALL.into_iter().filter(move |e| self.contains(*e))
    }

    /// Canonical-order 0/1 vector.
    pub fn to_bools(self) -> [bool; NUM_EMOTIONS] {
        let mut b = [false; NUM_EMOTIONS];
        for e in self.iter() {
            b[e.index()] = true;
        }
        b
    }

    /// Names in canonical order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Emotion::name).collect()
    }

    /// Parses a list of names, ignoring brackets, quotes and separators:
    /// `"['Love', 'Joy']"`, `"Love,Joy"`, `"Love Joy"`, `"喜爱，喜悦"`.
    ///
    /// Errors with the first token that names no emotion.
    pub fn parse_list(s: &str) -> Result<LabelSet, UnknownEmotion> {
        let mut set = LabelSet::EMPTY;
        for tok in s
            .split(|c: char| matches!(c, ',' | '，' | '、' | ';' | '[' | ']') || c.is_whitespace())
            .map(|t| t.trim_matches(|c| c == '\'' || c == '"'))
            .filter(|t| !t.is_empty())
        {
            set.insert(tok.parse()?);
        }
        Ok(set)
    }
}

impl fmt::Display for LabelSet {
    /// Comma-joined names in canonical order, as the seed writes predictions (`Love,Joy`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl FromStr for LabelSet {
    type Err = UnknownEmotion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSet::parse_list(s)
    }
}

impl FromIterator<Emotion> for LabelSet {
    fn from_iter<I: IntoIterator<Item = Emotion>>(it: I) -> Self {
        LabelSet::from_emotions(it)
    }
}

impl Serialize for LabelSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(self.iter().map(Emotion::name))
        } else {
            s.serialize_u8(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for LabelSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let names = Vec::<String>::deserialize(d)?;
            let mut set = LabelSet::EMPTY;
            for n in names {
                set.insert(n.parse().map_err(serde::de::Error::custom)?);
            }
            Ok(set)
        } else {
            Ok(LabelSet(u8::deserialize(d)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_list_format() {
        let s = LabelSet::parse_list("['Love', 'Joy', 'Anxiety']").unwrap();
        assert_eq!(s.names(), ["Love", "Joy", "Anxiety"]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn order_is_canonical_whatever_the_input_order() {
        let a: LabelSet = "Anger,Love".parse().unwrap();
        let b: LabelSet = "love anger".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "Love,Anger");
    }

    #[test]
    fn chinese_names_and_unknown() {
        assert_eq!("喜悦".parse::<Emotion>().unwrap(), Emotion::Joy);
        let err = LabelSet::parse_list("Love, Happy").unwrap_err();
        assert_eq!(err.0, "Happy");
        assert!(LabelSet::parse_list("[]").unwrap().is_empty());
    }

    #[test]
    fn json_names_binary_byte() {
        let s: LabelSet = "Joy,Anger".parse().unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"["Joy","Anger"]"#);
        assert_eq!(
            serde_json::from_str::<LabelSet>(r#"["Anger","Joy"]"#).unwrap(),
            s
        );
        let b = bincode::serde::encode_to_vec(s, bincode::config::standard()).unwrap();
        assert_eq!(b, [s.0]);
    }

    #[test]
    fn bools_roundtrip() {
        let s: LabelSet = "Joy,Surprise".parse().unwrap();
        assert_eq!(LabelSet::from_bools(&s.to_bools()), s);
        assert!(s.is_superset("Joy".parse().unwrap()));
        assert!(!s.is_superset("Joy,Anger".parse().unwrap()));
    }
}
