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

use rayon::prelude::*;

use crate::error::{Error, Result};

pub use decode::TokenDecoder;
pub use qa::Metric;

/// Checks that there is one non-empty gold list per response.
pub fn check_golds(n: usize, golds: &[Vec<String>]) -> Result<()> {
    if golds.len() != n {
        return Err(Error::shape(
            "golds",
            format!("one gold (or list of golds) per response ({n})"),
            format!("{} entries", golds.len()),
        ));
    }
    if let Some(i) = golds.iter().position(Vec::is_empty) {
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

/// Each distinct gold answer normalized once (RL batches repeat golds across a group), and per
/// response the indices of its golds in that table.
fn prepare_golds(golds: &[Vec<String>]) -> Result<(Vec<math::Normalized>, Vec<Vec<usize>>)> {
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut unique: Vec<&str> = Vec::new();
    let refs = golds
        .iter()
        .map(|gs| {
            gs.iter()
                .map(|g| {
                    *index.entry(g.as_str()).or_insert_with(|| {
                        unique.push(g.as_str());
                        unique.len() - 1
                    })
                })
                .collect()
        })
        .collect();
    let table = par_map(unique.len(), |i| math::normalize_math(unique[i]))?;
    Ok((table, refs))
}

/// Math verdicts of a batch: `Some(true)` correct, `Some(false)` wrong, `None` no answer.
pub fn math_judge(
    responses: &[impl AsRef<str> + Sync],
    golds: &[Vec<String>],
    percent: bool,
) -> Result<Vec<Option<bool>>> {
    check_golds(responses.len(), golds)?;
    let (table, refs) = prepare_golds(golds)?;
    par_map(responses.len(), |i| {
        math::judge_response(
            responses[i].as_ref(),
            refs[i].iter().map(|&k| &table[k]),
            percent,
        )
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
    Ok(math_judge(responses, golds, percent)?
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
