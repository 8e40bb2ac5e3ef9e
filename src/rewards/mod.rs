//! Rewards over whole batches of responses: QA F1 / EM / contains (ZeroSearch, Search-R1), math
//! accuracy (Parallel-R1, DAPO-style data), the Parallel-R1 format check and reward recipes.
//!
//! Every batch function validates its arguments first (lengths, empty gold lists), then scores
//! the responses in parallel in r1kit's pool ([`crate::parallel::install`]); each response is
//! scored on its own, so results never depend on the thread count. A response that cannot be
//! read (empty, garbage, only tags) scores as "no answer"; only bad arguments are errors.
//! Everything is linear in the input: no backtracking regex, no recursion on user text.
//!
//! Definitions: `shared/spec/rewards.md`.

pub mod decode;
pub mod format;
pub mod math;
pub mod qa;
pub mod recipe;
pub mod text;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rayon::prelude::*;

use crate::error::{Error, Result};

pub use decode::TokenDecoder;
pub use qa::Metric;

/// Checks that there is one non-empty gold list per response.
pub fn check_golds(n: usize, golds: &[Vec<String>]) -> Result<()> {
    check_gold_counts(n, golds.len(), golds.iter().position(Vec::is_empty))
}

/// [`check_golds`] from the number of gold lists and the first empty one.
fn check_gold_counts(n: usize, lists: usize, first_empty: Option<usize>) -> Result<()> {
    if lists != n {
        return Err(Error::shape(
            "golds",
            format!("one gold (or list of golds) per response ({n})"),
            format!("{lists} entries"),
        ));
    }
    if let Some(i) = first_empty {
        return Err(Error::value(
            format!("golds[{i}]"),
            "at least one gold answer",
            "an empty list",
        ));
    }
    Ok(())
}

/// Maps `f` over the responses in r1kit's pool, keeping the order.
pub(crate) fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Result<Vec<T>> {
    crate::parallel::install(|| (0..n).into_par_iter().map(f).collect())
}

/// QA scores of a batch (see [`qa::score_response`]).
pub fn qa_scores(
    responses: &[impl AsRef<str> + Sync],
    golds: &[Vec<String>],
    metric: Metric,
    unicode: bool,
) -> Result<Vec<qa::QaScore>> {
    check_golds(responses.len(), golds)?;
    par_map(responses.len(), |i| {
        qa::score_response(responses[i].as_ref(), &golds[i], metric, unicode)
    })
}

/// Search-R1 format-aware QA scores of a batch (see [`qa::format_score`]).
pub fn qa_format_scores(
    responses: &[impl AsRef<str> + Sync],
    golds: &[Vec<String>],
    metric: Metric,
    unicode: bool,
    structure_score: f64,
    final_format_score: f64,
) -> Result<Vec<f64>> {
    check_golds(responses.len(), golds)?;
    for (arg, v) in [
        ("structure_score", structure_score),
        ("final_format_score", final_format_score),
    ] {
        if !v.is_finite() {
            return Err(Error::value(arg, "a finite number", v));
        }
    }
    par_map(responses.len(), |i| {
        qa::format_score(
            responses[i].as_ref(),
            &golds[i],
            metric,
            unicode,
            structure_score,
            final_format_score,
        )
    })
}

/// Answers extracted from a batch (last `<answer>` block, stripped).
pub fn extract_answers(responses: &[impl AsRef<str> + Sync]) -> Result<Vec<Option<String>>> {
    par_map(responses.len(), |i| {
        qa::extract_answer(responses[i].as_ref()).map(str::to_owned)
    })
}

/// The gold answers of a math batch: each distinct gold string normalized and parsed once (RL
/// batches repeat a prompt's gold across its group of samples), and per response the indices of
/// its golds in that table.
pub struct MathGolds {
    table: Vec<math::Gold>,
    /// Response i's golds are `table[ids[k]]` for k in `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
    ids: Vec<u32>,
}

impl MathGolds {
    /// From one list of gold strings per response.
    pub fn new(golds: &[Vec<String>]) -> Result<Self> {
        let strings: Vec<&str> = golds.iter().flatten().map(String::as_str).collect();
        let mut offsets = Vec::with_capacity(golds.len() + 1);
        offsets.push(0);
        for gs in golds {
            offsets.push(offsets[offsets.len() - 1] + gs.len());
        }
        let ids = (0..strings.len())
            .map(|k| u32::try_from(k).map_err(|_| too_many(k)))
            .collect::<Result<_>>()?;
        Self::from_parts(&strings, offsets, ids)
    }

    /// From gold strings (repeats allowed) and, per response i, the indices into `strings` of its
    /// golds: `ids[offsets[i]..offsets[i + 1]]` (`offsets` starts at 0, one more than responses).
    pub fn from_parts(
        strings: &[impl AsRef<str> + Sync],
        offsets: Vec<usize>,
        ids: Vec<u32>,
    ) -> Result<Self> {
        let mut index: HashMap<&str, u32, BuildHasherDefault<FxHasher>> = HashMap::default();
        let mut unique: Vec<&str> = Vec::new();
        let remap = strings
            .iter()
            .map(|s| {
                let s = s.as_ref();
                if let Some(&k) = index.get(s) {
                    return Ok(k);
                }
                let k = u32::try_from(unique.len()).map_err(|_| too_many(unique.len()))?;
                index.insert(s, k);
                unique.push(s);
                Ok(k)
            })
            .collect::<Result<Vec<u32>>>()?;
        let ids = ids
            .into_iter()
            .map(|k| {
                remap
                    .get(k as usize)
                    .copied()
                    .ok_or_else(|| Error::value("golds", "indices into the gold strings", k))
            })
            .collect::<Result<_>>()?;
        // A handful of distinct golds is not worth waking the pool.
        let table = if unique.len() <= 64 {
            unique.iter().map(|g| math::Gold::new(g)).collect()
        } else {
            par_map(unique.len(), |i| math::Gold::new(unique[i]))?
        };
        Ok(Self {
            table,
            offsets,
            ids,
        })
    }

    /// Number of responses.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// True when there are no responses.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn golds_of(&self, i: usize) -> impl Iterator<Item = &math::Gold> {
        self.ids_of(i).iter().map(|&k| &self.table[k as usize])
    }

    /// Response i's golds as indices into the table (equal golds have equal indices).
    fn ids_of(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    fn check(&self, n: usize) -> Result<()> {
        let first_empty = (0..self.len()).find(|&i| self.offsets[i] == self.offsets[i + 1]);
        check_gold_counts(n, self.len(), first_empty)
    }
}

fn too_many(k: usize) -> Error {
    Error::value("golds", "fewer than 2**32 gold answers", k)
}

/// FxHash (rustc's hasher): the gold table hashes short strings it owns, no untrusted-key
/// flooding concern, and SipHash showed in profiles.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, w: u64) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // One zero-padded word (the length goes in too, so `a` and `a\0` differ).
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Math verdicts of a batch: `Some(true)` correct, `Some(false)` wrong, `None` no answer.
pub fn math_judge(
    responses: &[impl AsRef<str> + Sync],
    golds: &[Vec<String>],
    percent: bool,
) -> Result<Vec<Option<bool>>> {
    check_golds(responses.len(), golds)?;
    math_judge_golds(responses, &MathGolds::new(golds)?, percent)
}

/// [`math_judge`] with the golds already in a table.
///
/// Each response's answer is found on its own, in parallel. Responses whose answer and golds are
/// those of an earlier response share its verdict (RL groups repeat answers: a bench batch of
/// 10,000 has about 5,000 distinct pairs), so each distinct (answer, golds) pair is judged once.
/// A verdict depends on the pair alone, so the result is that of judging every response with
/// [`math::judge_response`], whatever the thread count.
pub fn math_judge_golds(
    responses: &[impl AsRef<str> + Sync],
    golds: &MathGolds,
    percent: bool,
) -> Result<Vec<Option<bool>>> {
    golds.check(responses.len())?;
    let n = responses.len();
    if u32::try_from(n).is_err() {
        return Err(Error::value("responses", "fewer than 2**32 responses", n));
    }
    crate::parallel::install(|| {
        let found: Vec<Option<Found<'_>>> = (0..n)
            .into_par_iter()
            .map(|i| {
                // The scan for `Final Answer:` reads the whole response from its end: start
                // loading the next one's tail (separate allocations defeat the prefetcher).
                if let Some(next) = responses.get(i + 1) {
                    crate::simd::prefetch_tail(next.as_ref().as_bytes(), PREFETCH_BYTES);
                }
                let answer = math::find_math_answer(responses[i].as_ref())?;
                Some(Found::new(answer, golds.ids_of(i)))
            })
            .collect();
        let pairs = distinct_pairs(&found, golds);
        let verdicts: Vec<bool> = pairs
            .first_of
            .par_iter()
            .map(|&i| {
                let answer = found[i as usize].as_ref().map_or("", Found::answer);
                math::judge_answer(answer, golds.golds_of(i as usize), percent)
            })
            .collect();
        pairs
            .pair_of
            .iter()
            .map(|&k| (k != NO_PAIR).then(|| verdicts[k as usize]))
            .collect()
    })
}

/// How much of the next response's tail [`math_judge_golds`] prefetches.
const PREFETCH_BYTES: usize = 1024;

/// A response's extracted answer and the hash of (answer, golds).
struct Found<'a> {
    answer: Answer<'a>,
    hash: u64,
}

/// Longest answer [`Found`] copies.
const INLINE: usize = 46;

/// An answer copied next to its hash when short (nearly always): the dedup and the judging
/// read it again after the whole batch has been scanned, when its response has left the cache
/// (that re-read was a fifth of the judging time).
enum Answer<'a> {
    Inline { len: u8, bytes: [u8; INLINE] },
    Text(Cow<'a, str>),
}

impl<'a> Found<'a> {
    fn new(answer: Cow<'a, str>, gold_ids: &[u32]) -> Self {
        let hash = pair_hash(&answer, gold_ids);
        let answer = match u8::try_from(answer.len()) {
            Ok(len) if answer.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..answer.len()].copy_from_slice(answer.as_bytes());
                Answer::Inline { len, bytes }
            }
            _ => Answer::Text(answer),
        };
        Self { answer, hash }
    }

    fn answer(&self) -> &str {
        match &self.answer {
            Answer::Inline { len, bytes } => {
                let b = &bytes[..usize::from(*len)];
                // SAFETY: `b` is a whole `str` copied byte for byte (see `new`).
                unsafe { std::str::from_utf8_unchecked(b) }
            }
            Answer::Text(t) => t,
        }
    }
}

fn pair_hash(answer: &str, gold_ids: &[u32]) -> u64 {
    let mut h = FxHasher::default();
    h.write(answer.as_bytes());
    h.write_u64(gold_ids.len() as u64);
    for &k in gold_ids {
        h.write_u32(k);
    }
    h.finish()
}

const NO_PAIR: u32 = u32::MAX;

/// The distinct (answer, golds) pairs of a batch, numbered in order of first appearance.
struct Pairs {
    /// Per response, its pair (NO_PAIR for a response without an answer).
    pair_of: Vec<u32>,
    /// Per pair, the first response that has it.
    first_of: Vec<u32>,
}

/// Numbers the distinct pairs with one open-addressing table (linear probing; a slot holds a
/// pair and the high half of its hash, so most mismatches cost no string compare).
fn distinct_pairs(found: &[Option<Found<'_>>], golds: &MathGolds) -> Pairs {
    let bits = (2 * found.len())
        .max(16)
        .next_power_of_two()
        .trailing_zeros();
    let mask = (1usize << bits) - 1;
    let mut slots: Vec<(u32, u32)> = vec![(NO_PAIR, 0); mask + 1];
    let mut first_of: Vec<u32> = Vec::new();
    let mut pair_of = Vec::with_capacity(found.len());
    for (i, f) in found.iter().enumerate() {
        let Some(f) = f else {
            pair_of.push(NO_PAIR);
            continue;
        };
        // FxHash mixes into the high bits (its last step is a multiply): index from those.
        let mut s = (f.hash >> (64 - bits)) as usize;
        let tag = f.hash as u32;
        let k = loop {
            let (k, t) = slots[s];
            if k == NO_PAIR {
                // Fewer than 2**32 responses (checked by the caller), so the pair numbers fit.
                let k = first_of.len() as u32;
                slots[s] = (k, tag);
                first_of.push(i as u32);
                break k;
            }
            let j = first_of[k as usize] as usize;
            if t == tag
                && found[j]
                    .as_ref()
                    .is_some_and(|g| g.hash == f.hash && g.answer() == f.answer())
                && golds.ids_of(j) == golds.ids_of(i)
            {
                break k;
            }
            s = (s + 1) & mask;
        };
        pair_of.push(k);
    }
    Pairs { pair_of, first_of }
}

/// Math scores of a batch: `correct` or `incorrect` per response.
pub fn math_scores(
    responses: &[impl AsRef<str> + Sync],
    golds: &[Vec<String>],
    percent: bool,
    correct: f64,
    incorrect: f64,
) -> Result<Vec<f64>> {
    check_golds(responses.len(), golds)?;
    math_scores_golds(
        responses,
        &MathGolds::new(golds)?,
        percent,
        correct,
        incorrect,
    )
}

/// [`math_scores`] with the golds already in a table.
pub fn math_scores_golds(
    responses: &[impl AsRef<str> + Sync],
    golds: &MathGolds,
    percent: bool,
    correct: f64,
    incorrect: f64,
) -> Result<Vec<f64>> {
    Ok(math_judge_golds(responses, golds, percent)?
        .into_iter()
        .map(|v| if v == Some(true) { correct } else { incorrect })
        .collect())
}

/// Parallel-R1 recipe rewards of a batch at `step`: math correctness and, on the steps that
/// need it, the format verdict of each response (`formats`, one per response).
pub fn recipe_rewards(
    recipe: recipe::Recipe,
    step: u64,
    responses: &[impl AsRef<str> + Sync],
    golds: &[Vec<String>],
    formats: impl Fn(usize) -> format::ParallelFormat + Sync + Send,
) -> Result<Vec<f64>> {
    let correct = math_judge(responses, golds, false)?;
    let needs_format = recipe.needs_format(step);
    par_map(responses.len(), |i| {
        let fmt = needs_format.then(|| formats(i));
        recipe.reward(step, correct[i] == Some(true), fmt.as_ref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of indices below `m` (xorshift64*).
    fn picker(seed: u64) -> impl FnMut(usize) -> usize {
        let mut state = seed;
        move |m| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % m
        }
    }

    #[test]
    fn memoized_verdicts_equal_per_response_judging() {
        // Few answers, written in every format, so that answers and pairs repeat a lot; equal
        // extracted answers also come from differently formatted responses.
        const ANSWERS: [&str; 15] = [
            // Longer than what `Found` copies, and both sides of that length.
            "\\frac{123456789}{987654321} + \\text{and more words after it}",
            "0.50000000000000000000000000000000000000000000",
            "0.500000000000000000000000000000000000000000000",
            "1/2",
            "\\frac{1}{2}",
            "0.5",
            "3",
            "x = 3",
            "(1, 2)",
            "\\{2, 1\\}",
            "10\\%",
            "0.1",
            "\\text{blue}",
            "",
            "{",
        ];
        const GOLDS: [&str; 7] = ["0.5", "3", "(1,2)", "\\{1,2\\}", "10%", "\\text{blue}", "7"];
        let formats: [fn(&str) -> String; 6] = [
            |a| format!("reasoning\nFinal Answer: {a}\n"),
            |a| format!("so $\\boxed{{{a}}}$"),
            |a| format!("Final Answer: The final answer is ${a}$. I hope it is correct."),
            |a| format!("<Summary>Final Answer: {a}</Summary>"),
            |a| format!("text \\boxed{{{a}}} more"),
            |a| format!("no answer here {a}"),
        ];
        let mut next = picker(0x9e37_79b9_7f4a_7c15);
        let n = 5_000;
        let responses: Vec<String> = (0..n)
            .map(|_| formats[next(formats.len())](ANSWERS[next(ANSWERS.len())]))
            .collect();
        // Golds: equal content in separate strings; lists of one to three, in any order.
        let golds: Vec<Vec<String>> = (0..n)
            .map(|_| {
                (0..1 + next(3))
                    .map(|_| GOLDS[next(GOLDS.len())].to_string())
                    .collect()
            })
            .collect();
        for percent in [false, true] {
            let got = math_judge(&responses, &golds, percent).unwrap();
            let want: Vec<Option<bool>> = responses
                .iter()
                .zip(&golds)
                .map(|(r, gs)| {
                    let gs: Vec<math::Gold> = gs.iter().map(|g| math::Gold::new(g)).collect();
                    math::judge_response(r, gs.iter(), percent)
                })
                .collect();
            assert_eq!(got, want);
            // The batch really repeats: both verdicts and "no answer" occur.
            for v in [Some(true), Some(false), None] {
                assert!(got.iter().filter(|&&x| x == v).count() > 100, "{v:?}");
            }
        }
        // The same golds given as shared strings with repeated ids.
        let strings: Vec<&str> = GOLDS.iter().chain(GOLDS.iter()).copied().collect();
        let ids: Vec<u32> = (0..n).map(|i| (i % strings.len()) as u32).collect();
        let offsets: Vec<usize> = (0..=n).collect();
        let table = MathGolds::from_parts(&strings, offsets, ids).unwrap();
        let got = math_judge_golds(&responses, &table, false).unwrap();
        let want: Vec<Option<bool>> = (0..n)
            .map(|i| {
                let g = math::Gold::new(strings[i % strings.len()]);
                math::judge_response(&responses[i], std::iter::once(&g), false)
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn colliding_hashes_still_compare_answers_and_golds() {
        let golds =
            MathGolds::from_parts(&["1", "2"], vec![0, 1, 2, 3, 4], vec![0, 0, 0, 1]).unwrap();
        let found: Vec<Option<Found<'_>>> = ["a", "b", "a", "a"]
            .iter()
            .map(|&a| {
                Some(Found {
                    hash: 7,
                    ..Found::new(a.into(), &[])
                })
            })
            .collect();
        let pairs = distinct_pairs(&found, &golds);
        assert_eq!(pairs.pair_of, [0, 1, 0, 2]);
        assert_eq!(pairs.first_of, [0, 1, 3]);
    }

    #[test]
    fn pair_hash_separates_lengths_and_golds() {
        assert_ne!(pair_hash("a", &[0]), pair_hash("a\0", &[0]));
        assert_ne!(pair_hash("a", &[0]), pair_hash("a", &[1]));
        assert_ne!(pair_hash("a", &[0, 1]), pair_hash("a", &[1, 0]));
        assert_ne!(pair_hash("a", &[0]), pair_hash("a", &[0, 0]));
    }
}
