//! QA rewards (ZeroSearch, Search-R1): answer extraction, SQuAD normalization, F1 / EM /
//! contains, and Search-R1's format-aware score. Definitions: `shared/spec/rewards.md`.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::UnicodeNormalization;

use super::text::{is_ascii_punct, is_py_space, is_unicode_punct, is_word, py_strip};
use crate::error::{Error, Result};

/// How a prediction is compared with a gold answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Token F1 of the normalized strings.
    F1,
    /// Normalized strings equal (Search-R1's EM).
    Em,
    /// Normalized gold is a substring of the normalized prediction (ZeroSearch's logged "EM").
    Contains,
}

impl Metric {
    /// Parses `"f1"`, `"em"` and `"contains"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "f1" => Ok(Metric::F1),
            "em" => Ok(Metric::Em),
            "contains" => Ok(Metric::Contains),
            other => Err(Error::value(
                "metric",
                "one of 'f1', 'em', 'contains'",
                format!("{other:?}"),
            )),
        }
    }
}

/// The content of the last `<answer>...</answer>` of `response`, stripped; `None` if there is none.
///
/// Pairs are found left to right like the references' non-greedy regex: an `<answer>` pairs with
/// the first `</answer>` after it. Linear in the response.
pub fn extract_answer(response: &str) -> Option<&str> {
    static OPEN: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"<answer>"));
    static CLOSE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"</answer>"));
    let b = response.as_bytes();
    let mut last = None;
    let mut pos = 0;
    while let Some(o) = OPEN.find(&b[pos..]) {
        let start = pos + o + OPEN.needle().len();
        let Some(c) = CLOSE.find(&b[start..]) else {
            break; // no later `<answer>` can be closed either
        };
        last = Some(&response[start..start + c]);
        pos = start + c + CLOSE.needle().len();
    }
    last.map(py_strip)
}

/// SQuAD normalization: lowercase, drop punctuation, replace the words a / an / the by a space,
/// collapse whitespace. `unicode` also folds accents (NFKD without combining marks, before
/// lowercasing) and drops Unicode punctuation (category P*).
pub fn normalize_answer(s: &str, unicode: bool) -> String {
    let lowered = if unicode {
        let folded: String = s
            .nfkd()
            .filter(|&c| canonical_combining_class(c) == 0)
            .collect();
        folded.to_lowercase()
    } else {
        s.to_lowercase()
    };
    let mut out = String::with_capacity(lowered.len());
    let mut word = String::new();
    let flush_word = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    // Articles are whole runs of word characters once punctuation is gone (`\b(a|an|the)\b`).
    for c in lowered.chars() {
        if is_ascii_punct(c) || (unicode && is_unicode_punct(c)) {
            continue;
        }
        if is_word(c) {
            word.push(c);
        } else {
            flush_word(&mut word, &mut out);
            out.push(c);
        }
    }
    flush_word(&mut word, &mut out);
    let mut collapsed = String::with_capacity(out.len());
    for token in out.split(is_py_space).filter(|t| !t.is_empty()) {
        if !collapsed.is_empty() {
            collapsed.push(' ');
        }
        collapsed.push_str(token);
    }
    collapsed
}

/// Token F1 of two normalized strings: multiset overlap of their whitespace tokens.
pub fn f1_normalized(pred: &str, gold: &str) -> f64 {
    let mut p: Vec<&str> = pred.split(' ').filter(|t| !t.is_empty()).collect();
    let mut g: Vec<&str> = gold.split(' ').filter(|t| !t.is_empty()).collect();
    if p.is_empty() || g.is_empty() {
        return 0.0;
    }
    p.sort_unstable();
    g.sort_unstable();
    let (mut i, mut j, mut same) = (0, 0, 0usize);
    while i < p.len() && j < g.len() {
        match p[i].cmp(g[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                same += 1;
                i += 1;
                j += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    // Same operation order as the Python references, so the f64 results are bit-identical.
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Score of one prediction (raw answer text) against its golds: max over the golds.
/// A gold that normalizes to "" never matches.
pub fn score_answer(pred: &str, golds: &[String], metric: Metric, unicode: bool) -> f64 {
    let p = normalize_answer(pred, unicode);
    let mut best: f64 = 0.0;
    for gold in golds {
        let g = normalize_answer(gold, unicode);
        if g.is_empty() {
            continue;
        }
        let s = match metric {
            Metric::F1 => f1_normalized(&p, &g),
            Metric::Em => f64::from(u8::from(p == g)),
            Metric::Contains => f64::from(u8::from(p.contains(g.as_str()))),
        };
        best = best.max(s);
        if best >= 1.0 {
            break;
        }
    }
    best
}

/// One scored response: the score, the extracted answer (`None`: no answer found).
#[derive(Debug, Clone, PartialEq)]
pub struct QaScore {
    /// Metric value, 0 when there is no answer.
    pub score: f64,
    /// Stripped content of the last `<answer>` block.
    pub answer: Option<String>,
}

/// Scores one response.
pub fn score_response(response: &str, golds: &[String], metric: Metric, unicode: bool) -> QaScore {
    match extract_answer(response) {
        None => QaScore {
            score: 0.0,
            answer: None,
        },
        Some(a) => QaScore {
            score: score_answer(a, golds, metric, unicode),
            answer: Some(a.to_string()),
        },
    }
}

/// Search-R1's tag-order check over the response: `<think>` first, then any number of
/// `</think> <search>..</search> <information>..</information> <think>..` rounds, then
/// `</think> <answer>..</answer>` and nothing but whitespace between tags or after the end.
pub fn is_valid_search_sequence(response: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Start,
        InThink,
        AfterThink,
        InSearch,
        AfterSearch,
        InInfo,
        AfterInfo,
        InAnswer,
        End,
    }
    const TAGS: [&str; 8] = [
        "<think>",
        "</think>",
        "<search>",
        "</search>",
        "<information>",
        "</information>",
        "<answer>",
        "</answer>",
    ];
    let inside = |s: S| matches!(s, S::InThink | S::InSearch | S::InInfo | S::InAnswer);
    let mut state = S::Start;
    let mut text_start = 0;
    let bytes = response.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &response[i..];
        let Some(k) = TAGS.iter().position(|t| rest.starts_with(t)) else {
            i += 1;
            continue;
        };
        // Text between the previous tag and this one: only whitespace outside of tags.
        if !inside(state) && !py_strip(&response[text_start..i]).is_empty() {
            return false;
        }
        state = match (k, state) {
            (0, S::Start | S::AfterInfo) => S::InThink,
            (1, S::InThink) => S::AfterThink,
            (2, S::AfterThink) => S::InSearch,
            (3, S::InSearch) => S::AfterSearch,
            (4, S::AfterSearch) => S::InInfo,
            (5, S::InInfo) => S::AfterInfo,
            (6, S::AfterThink) => S::InAnswer,
            (7, S::InAnswer) => S::End,
            _ => return false,
        };
        i += TAGS[k].len();
        text_start = i;
    }
    state == S::End && py_strip(&response[text_start..]).is_empty()
}

/// Search-R1's format-aware reward for one response: correct and well formed 1; correct but
/// malformed 1 - `structure_score`; wrong (or no answer) but well formed `structure_score`;
/// an answer that is wrong and malformed `final_format_score`; no answer and malformed 0.
/// "Correct" means the metric reaches 1.
pub fn format_score(
    response: &str,
    golds: &[String],
    metric: Metric,
    unicode: bool,
    structure_score: f64,
    final_format_score: f64,
) -> f64 {
    let valid = is_valid_search_sequence(response);
    let scored = score_response(response, golds, metric, unicode);
    let correct = scored.score >= 1.0;
    match (scored.answer.is_some(), correct, valid) {
        (_, true, true) => 1.0,
        (_, true, false) => 1.0 - structure_score,
        (_, false, true) => structure_score,
        (true, false, false) => final_format_score,
        (false, _, false) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golds(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    fn f1(resp: &str, g: &[&str]) -> f64 {
        score_response(resp, &golds(g), Metric::F1, false).score
    }

    #[test]
    fn spec_examples() {
        let ws = ["William Shakespeare", "Shakespeare"];
        assert_eq!(f1("<answer> William Shakespeare </answer>", &ws), 1.0);
        assert_eq!(
            f1("<answer>Shakespeare, the playwright</answer>", &ws[..1]),
            0.5
        );
        let r = "<answer>it was William Shakespeare in 1600</answer>";
        assert_eq!(f1(r, &ws[..1]), 0.5);
        let g = golds(&ws[..1]);
        assert_eq!(score_response(r, &g, Metric::Contains, false).score, 1.0);
        assert_eq!(score_response(r, &g, Metric::Em, false).score, 0.0);
        assert_eq!(f1("<answer></answer>", &ws), 0.0);
        let two = "<answer>Marlowe</answer> ... <answer>Shakespeare</answer>";
        assert!((f1(two, &ws[..1]) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f1("<answer>Romeo</answer>", &["Rome"]), 0.0);
        let rome = score_response(
            "<answer>Romeo</answer>",
            &golds(&["Rome"]),
            Metric::Contains,
            false,
        );
        assert_eq!(rome.score, 1.0);
        assert_eq!(
            f1("<answer>Shakespeare Shakespeare</answer>", &ws[..1]),
            0.5
        );
        assert_eq!(f1("<answer>1,000</answer>", &["1000"]), 1.0);
        assert_eq!(f1("<answer>Paris", &["Paris"]), 0.0);
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize_answer("The  Cat, an apple!", false), "cat apple");
        assert_eq!(normalize_answer("theater A-team", false), "theater ateam");
        assert_eq!(normalize_answer("€a b", false), "€ b");
        assert_eq!(normalize_answer("Café «Noël»", false), "café «noël»");
        assert_eq!(normalize_answer("Café «Noël»", true), "cafe noel");
        // An empty gold never matches, not even an empty answer.
        let g = golds(&["", "!!"]);
        assert_eq!(
            score_response("<answer></answer>", &g, Metric::Em, false).score,
            0.0
        );
        assert_eq!(
            score_response("<answer>x</answer>", &g, Metric::Contains, false).score,
            0.0
        );
    }

    #[test]
    fn search_r1_format() {
        let good = "<think>a</think>\n<search>q</search><information>d</information>\
                    <think>b</think> <answer>Paris</answer>\n";
        assert!(is_valid_search_sequence(good));
        assert!(!is_valid_search_sequence(
            "<think>a</think> x <answer>Paris</answer>"
        ));
        assert!(!is_valid_search_sequence("<answer>Paris</answer>"));
        assert!(!is_valid_search_sequence(
            "<think>a</think><answer>Paris</answer> tail"
        ));
        let g = golds(&["Paris"]);
        let s = |r: &str| format_score(r, &g, Metric::Em, false, 0.2, 0.1);
        assert_eq!(s(good), 1.0);
        assert_eq!(s("<answer>Paris</answer>"), 0.8);
        assert_eq!(s("<think>a</think><answer>Rome</answer>"), 0.2);
        assert_eq!(s("<answer>Rome</answer>"), 0.1);
        assert_eq!(s("no tags"), 0.0);
    }
}
