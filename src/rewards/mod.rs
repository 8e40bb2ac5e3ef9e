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
        self.ids[self.offsets[i]..self.offsets[i + 1]]
            .iter()
            .map(|&k| &self.table[k as usize])
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

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
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
pub fn math_judge_golds(
    responses: &[impl AsRef<str> + Sync],
    golds: &MathGolds,
    percent: bool,
) -> Result<Vec<Option<bool>>> {
    golds.check(responses.len())?;
    par_map(responses.len(), |i| {
        math::judge_response(responses[i].as_ref(), golds.golds_of(i), percent)
    })
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
