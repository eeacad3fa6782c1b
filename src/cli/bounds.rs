//! Value parsers of the numeric options that size a result or a window: a neighbour count
//! (`-k`, `--neighbours-k`), a row limit (`--limit`), a context window (`--context`), a block
//! (`--val-block`), an ANN search's candidates (`--ef`). Zero where it would mean nothing, and values past what any corpus needs,
//! are refused by clap (exit 2) with one message per bound, before any work starts.

/// Most neighbours retrieved per query (`-k`, `--neighbours-k`).
pub const MAX_K: usize = 1000;
/// Most rows a command lists (`--limit`).
pub const MAX_LIMIT: usize = 1_000_000;
/// Most sentences of context on each side (`--context`).
pub const MAX_CONTEXT: usize = 64;
/// Longest validation block (`--val-block`).
pub const MAX_BLOCK: usize = 1_000_000;

/// Most candidates an ANN search keeps (`--ef`).
pub const MAX_EF: usize = emoknow::neighbours::ann::MAX_EF;

/// A neighbour count: 1 to [`MAX_K`].
pub fn k(s: &str) -> Result<usize, String> {
    within(s, 1, MAX_K)
}

/// A row limit: 1 to [`MAX_LIMIT`].
pub fn limit(s: &str) -> Result<usize, String> {
    within(s, 1, MAX_LIMIT)
}

/// A context window: 0 (none) to [`MAX_CONTEXT`] sentences on each side.
pub fn context(s: &str) -> Result<usize, String> {
    within(s, 0, MAX_CONTEXT)
}

/// An ANN search's candidates: 1 to [`MAX_EF`].
pub fn ef(s: &str) -> Result<usize, String> {
    within(s, 1, MAX_EF)
}

/// A block of rows: 1 to [`MAX_BLOCK`].
pub fn block(s: &str) -> Result<usize, String> {
    within(s, 1, MAX_BLOCK)
}

fn within(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: u128 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number from {min} to {max}"))?;
    if n < min as u128 {
        return Err(format!("must be at least {min}"));
    }
    if n > max as u128 {
        return Err(format!("must be at most {max}"));
    }
    Ok(n as usize)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Parser = fn(&str) -> Result<usize, String>;

    /// Every bound's edges, powers of two up to 2^127, and pseudo-random numbers of every size.
    fn numbers() -> Vec<u128> {
        let mut out: Vec<u128> = (0..128).map(|b| 1u128 << b).collect();
        for m in [MAX_K, MAX_LIMIT, MAX_CONTEXT, MAX_BLOCK, MAX_EF] {
            out.extend([m as u128 - 1, m as u128, m as u128 + 1]);
        }
        out.extend([0, u64::MAX as u128, u128::MAX]);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(u128::from(x) >> (x % 64));
        }
        out
    }

    #[test]
    fn any_number_is_taken_within_its_bounds_and_refused_outside() {
        let bounds: [(Parser, usize, usize); 5] = [
            (k, 1, MAX_K),
            (limit, 1, MAX_LIMIT),
            (context, 0, MAX_CONTEXT),
            (block, 1, MAX_BLOCK),
            (ef, 1, MAX_EF),
        ];
        for n in numbers() {
            for (parse, min, max) in bounds {
                let got = parse(&n.to_string());
                if n >= min as u128 && n <= max as u128 {
                    assert_eq!(got, Ok(n as usize));
                } else {
                    assert!(got.is_err(), "{n} taken");
                }
            }
        }
    }

    #[test]
    fn zero_and_words_are_refused_with_the_bound() {
        assert_eq!(k("0"), Err("must be at least 1".into()));
        assert_eq!(context("0"), Ok(0));
        assert_eq!(context("65"), Err("must be at most 64".into()));
        assert!(limit("-1")
            .unwrap_err()
            .contains("not a whole number from 1"));
        assert!(k("18446744073709551616")
            .unwrap_err()
            .contains("at most 1000"));
        assert!(k("3.5").is_err() && k("").is_err());
    }
}
