//! ZeroSearch's observation loss mask: which response tokens the environment wrote.
//!
//! A simulated-search rollout interleaves policy text with observations the environment appends:
//! `before <information> documents </information> after`, where `before` / `after` are the
//! surrounding text (r1kit's rollout writes `"\n\n"` on both sides). Every observation token is
//! excluded from the policy loss, entropy and KL; the policy still attends to them.
//!
//! Two builders that agree on every rollout r1kit writes:
//! - [`observation_mask`] from token ids and the tag ids (any trainer's batch, CPU or device),
//! - [`spans_mask`] from the token spans the rollout loop recorded.
//!
//! Token rule of [`observation_mask`] (a left-to-right scan over valid tokens; padding, where the
//! attention mask is 0, is skipped and gets 0):
//! - an `open` tag starts an observation (a second `open` inside one changes nothing);
//! - every token from that `open` through the next `close` (inclusive) gets 0;
//! - a `close` outside an observation is a policy token (1);
//! - when the `before` ids sit right before an observation's first `open`, they get 0, and the
//!   `after` ids right after its `close` get 0;
//! - an observation still open at the end of the row runs to the end.

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::parallel;
use crate::tensor::{self, TensorPath};

/// The token ids that delimit observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationTags {
    /// Id of the `<information>` token.
    pub open: i64,
    /// Id of the `</information>` token.
    pub close: i64,
    /// Ids the environment writes right before `open` (may be empty).
    pub before: Vec<i64>,
    /// Ids the environment writes right after `close` (may be empty).
    pub after: Vec<i64>,
}

impl ObservationTags {
    /// Checks that the tags are distinct and that `before` / `after` hold no tag.
    pub fn new(open: i64, close: i64, before: Vec<i64>, after: Vec<i64>) -> Result<Self> {
        if open == close {
            return Err(Error::value(
                "info_close",
                "an id different from info_open",
                format!("{close} for both"),
            ));
        }
        for (arg, ids) in [("before", &before), ("after", &after)] {
            if let Some(&id) = ids.iter().find(|&&id| id == open || id == close) {
                return Err(Error::value(
                    arg,
                    "ids without the observation tags",
                    format!("the tag id {id}"),
                ));
            }
        }
        Ok(Self {
            open,
            close,
            before,
            after,
        })
    }
}

/// Element types the mask is read from (attention masks) and written in.
pub trait MaskElement: tch::kind::Element + Copy + Send + Sync {
    /// The value 0.
    const OFF: Self;
    /// The value 1.
    const ON: Self;
    /// True when the value is not 0.
    fn is_set(self) -> bool;
}

macro_rules! mask_element {
    ($($t:ty => $zero:expr, $one:expr);* $(;)?) => {$(
        impl MaskElement for $t {
            const OFF: Self = $zero;
            const ON: Self = $one;
            #[inline(always)]
            fn is_set(self) -> bool {
                self != $zero
            }
        }
    )*};
}

mask_element! {
    bool => false, true;
    u8 => 0, 1;
    i32 => 0, 1;
    i64 => 0, 1;
    f32 => 0.0, 1.0;
    f64 => 0.0, 1.0;
}

/// `pattern` occurs in `ids` ending right before `end`, on valid positions only.
#[inline]
fn matches_before<A: MaskElement>(
    ids: &[i64],
    valid: Option<&[A]>,
    end: usize,
    pattern: &[i64],
) -> bool {
    let n = pattern.len();
    end >= n
        && ids[end - n..end] == *pattern
        && valid.is_none_or(|v| v[end - n..end].iter().all(|a| a.is_set()))
}

/// `pattern` occurs in `ids` starting at `start`, on valid positions only.
#[inline]
fn matches_at<A: MaskElement>(
    ids: &[i64],
    valid: Option<&[A]>,
    start: usize,
    pattern: &[i64],
) -> bool {
    let n = pattern.len();
    start + n <= ids.len()
        && ids[start..start + n] == *pattern
        && valid.is_none_or(|v| v[start..start + n].iter().all(|a| a.is_set()))
}

/// The mask of one row (the scan of the module docs); `valid` is the row's attention mask.
pub fn observation_mask_row<A: MaskElement, O: MaskElement>(
    ids: &[i64],
    valid: Option<&[A]>,
    tags: &ObservationTags,
    out: &mut [O],
) {
    let mut inside = false;
    // Tokens of `after` still to clear after a closing tag.
    let mut after_left = 0usize;
    for t in 0..ids.len() {
        if valid.is_some_and(|v| !v[t].is_set()) {
            out[t] = O::OFF;
            continue;
        }
        let id = ids[t];
        if inside {
            out[t] = O::OFF;
            if id == tags.close {
                inside = false;
                if !tags.after.is_empty() && matches_at(ids, valid, t + 1, &tags.after) {
                    after_left = tags.after.len();
                }
            }
        } else if id == tags.open {
            out[t] = O::OFF;
            inside = true;
            after_left = 0;
            if !tags.before.is_empty() && matches_before(ids, valid, t, &tags.before) {
                out[t - tags.before.len()..t].fill(O::OFF);
            }
        } else if after_left > 0 {
            // `after` holds no tag (checked in `ObservationTags::new`), so the scan state holds.
            out[t] = O::OFF;
            after_left -= 1;
        } else {
            out[t] = O::ON;
        }
    }
}

/// Rows per rayon task: enough work per task to amortise scheduling on short rows.
fn rows_per_task(cols: usize) -> usize {
    (1usize << 15).div_ceil(cols.max(1)).max(1)
}

fn mask_cpu_typed<A: MaskElement, O: MaskElement>(
    ids: &Tensor,
    attention_mask: Option<&Tensor>,
    tags: &ObservationTags,
    kind: Kind,
) -> Result<Tensor> {
    let size = ids.size();
    let cols = size[1] as usize;
    let ids_c = tensor::contiguous(ids);
    let ids_s = tensor::cpu_slice::<i64>(&ids_c, "input_ids")?;
    let am_c = attention_mask.map(tensor::contiguous);
    let am_s = match &am_c {
        Some(a) => Some(tensor::cpu_slice::<A>(a, "attention_mask")?),
        None => None,
    };
    let mut out = Tensor::f_empty(&size[..], (kind, Device::Cpu))?;
    {
        let out_s = tensor::cpu_slice_mut::<O>(&mut out, "output")?;
        if cols > 0 {
            let per = rows_per_task(cols) * cols;
            parallel::install(|| {
                out_s
                    .par_chunks_mut(per)
                    .enumerate()
                    .for_each(|(chunk, out_rows)| {
                        let base = chunk * per;
                        for (r, out_row) in out_rows.chunks_mut(cols).enumerate() {
                            let lo = base + r * cols;
                            let valid = am_s.map(|a| &a[lo..lo + cols]);
                            observation_mask_row(&ids_s[lo..lo + cols], valid, tags, out_row);
                        }
                    })
            })?;
        }
    }
    Ok(out)
}

fn mask_cpu_out<A: MaskElement>(
    ids: &Tensor,
    attention_mask: Option<&Tensor>,
    tags: &ObservationTags,
    kind: Kind,
) -> Result<Tensor> {
    match kind {
        Kind::Bool => mask_cpu_typed::<A, bool>(ids, attention_mask, tags, kind),
        Kind::Uint8 => mask_cpu_typed::<A, u8>(ids, attention_mask, tags, kind),
        Kind::Int => mask_cpu_typed::<A, i32>(ids, attention_mask, tags, kind),
        Kind::Int64 => mask_cpu_typed::<A, i64>(ids, attention_mask, tags, kind),
        Kind::Float => mask_cpu_typed::<A, f32>(ids, attention_mask, tags, kind),
        Kind::Double => mask_cpu_typed::<A, f64>(ids, attention_mask, tags, kind),
        // Rare dtypes (int8, int16, half, bfloat16): compute in bool, then convert.
        other => Ok(
            mask_cpu_typed::<A, bool>(ids, attention_mask, tags, Kind::Bool)?.f_to_kind(other)?,
        ),
    }
}

/// CPU path: one scan per row, rows in parallel.
fn mask_cpu(
    ids: &Tensor,
    attention_mask: Option<&Tensor>,
    tags: &ObservationTags,
    kind: Kind,
) -> Result<Tensor> {
    let Some(am) = attention_mask else {
        return mask_cpu_out::<bool>(ids, None, tags, kind);
    };
    match tensor::kind_of(am, "attention_mask")? {
        Kind::Bool => mask_cpu_out::<bool>(ids, Some(am), tags, kind),
        Kind::Uint8 => mask_cpu_out::<u8>(ids, Some(am), tags, kind),
        Kind::Int => mask_cpu_out::<i32>(ids, Some(am), tags, kind),
        Kind::Int64 => mask_cpu_out::<i64>(ids, Some(am), tags, kind),
        Kind::Float => mask_cpu_out::<f32>(ids, Some(am), tags, kind),
        Kind::Double => mask_cpu_out::<f64>(ids, Some(am), tags, kind),
        _ => {
            let valid = am.f_ne(0)?;
            mask_cpu_out::<bool>(ids, Some(&valid), tags, kind)
        }
    }
}

/// `x` shifted right by `k` along dim 1 (`out[:, t] = x[:, t - k]`), `false` where undefined;
/// a negative `k` shifts left.
fn shift(x: &Tensor, k: i64) -> Result<Tensor> {
    let (rows, cols) = (x.size()[0], x.size()[1]);
    if k == 0 {
        return Ok(x.shallow_clone());
    }
    let fill = |n: i64| Tensor::f_zeros([rows, n], (Kind::Bool, x.device()));
    if k.abs() >= cols {
        return fill(cols).map_err(Error::from);
    }
    let kept = cols - k.abs();
    Ok(if k > 0 {
        Tensor::f_cat(&[fill(k)?, x.f_narrow(1, 0, kept)?], 1)?
    } else {
        Tensor::f_cat(&[x.f_narrow(1, -k, kept)?, fill(-k)?], 1)?
    })
}

/// Positions `t` where `ids[t + offset + j] == pattern[j]` on valid positions for every `j`.
fn pattern_at(ids: &Tensor, valid: &Tensor, pattern: &[i64], offset: i64) -> Result<Tensor> {
    let mut hit = valid.f_ones_like()?;
    for (j, &p) in pattern.iter().enumerate() {
        let here = ids.f_eq(p)?.f_logical_and(valid)?;
        hit = hit.f_logical_and(&shift(&here, -(offset + j as i64))?)?;
    }
    Ok(hit)
}

/// Device path: the same rule with tch ops only (a running max finds each token's last tag).
fn mask_device(
    ids: &Tensor,
    attention_mask: Option<&Tensor>,
    tags: &ObservationTags,
    kind: Kind,
) -> Result<Tensor> {
    let (rows, cols) = (ids.size()[0], ids.size()[1]);
    let device = ids.device();
    if rows == 0 || cols == 0 {
        return Ok(Tensor::f_zeros([rows, cols], (kind, device))?);
    }
    let valid = match attention_mask {
        Some(am) => am.f_ne(0)?,
        None => Tensor::f_ones([rows, cols], (Kind::Bool, device))?,
    };
    let open = ids.f_eq(tags.open)?.f_logical_and(&valid)?;
    let close = ids.f_eq(tags.close)?.f_logical_and(&valid)?;
    let tag = open.f_logical_or(&close)?;
    let pos = Tensor::f_arange(cols, (Kind::Int64, device))?.f_expand([rows, cols], false)?;
    let last_tag = pos.f_where_scalarother(&tag, -1)?.f_cummax(1)?.0;
    // State after each token: inside an observation iff the last tag so far is an `open`.
    let inside_after = open
        .f_gather(1, &last_tag.f_clamp_min(0)?, false)?
        .f_logical_and(&last_tag.f_ge(0)?)?;
    let inside_before = shift(&inside_after, 1)?;
    let closing = close.f_logical_and(&inside_before)?;
    let mut obs = inside_after.f_logical_or(&closing)?;
    if !tags.before.is_empty() {
        let opening = open.f_logical_and(&inside_before.f_logical_not()?)?;
        let n = tags.before.len() as i64;
        let hit = opening.f_logical_and(&pattern_at(ids, &valid, &tags.before, -n)?)?;
        for j in 1..=n {
            obs = obs.f_logical_or(&shift(&hit, -j)?)?;
        }
    }
    if !tags.after.is_empty() {
        let n = tags.after.len() as i64;
        let hit = closing.f_logical_and(&pattern_at(ids, &valid, &tags.after, 1)?)?;
        for j in 1..=n {
            obs = obs.f_logical_or(&shift(&hit, j)?)?;
        }
    }
    Ok(valid
        .f_logical_and(&obs.f_logical_not()?)?
        .f_to_kind(kind)?)
}

/// The observation loss mask of `input_ids` `[N, L]`: 1 on policy tokens, 0 on observation
/// tokens (module docs) and on padding.
///
/// `attention_mask` (`[N, L]`, any dtype, nonzero = valid) marks padding; the result has its
/// dtype (int64 without one) and lives on the ids' device.
pub fn observation_mask(
    input_ids: &Tensor,
    tags: &ObservationTags,
    attention_mask: Option<&Tensor>,
    path: TensorPath,
) -> Result<Tensor> {
    tensor::expect_ndim(input_ids, "input_ids", 2)?;
    let ids = tensor::integer_as_i64(input_ids, "input_ids")?;
    let kind = match attention_mask {
        Some(am) => {
            if am.size() != ids.size() {
                return Err(Error::shape(
                    "attention_mask",
                    format!("the shape of input_ids {}", tensor::shape_name(&ids)),
                    format!("shape {}", tensor::shape_name(am)),
                ));
            }
            tensor::expect_device(am, "attention_mask", ids.device())?;
            let kind = tensor::kind_of(am, "attention_mask")?;
            if !matches!(
                kind,
                Kind::Bool
                    | Kind::Uint8
                    | Kind::Int8
                    | Kind::Int16
                    | Kind::Int
                    | Kind::Int64
                    | Kind::Half
                    | Kind::BFloat16
                    | Kind::Float
                    | Kind::Double
            ) {
                return Err(Error::dtype(
                    "attention_mask",
                    "a bool, integer or real tensor",
                    tensor::kind_name(kind),
                ));
            }
            kind
        }
        None => Kind::Int64,
    };
    match path.resolve(ids.device())? {
        TensorPath::Device => mask_device(&ids, attention_mask, tags, kind),
        _ => mask_cpu(&ids, attention_mask, tags, kind),
    }
}

/// A loss mask `[N, width]` (int64) from recorded spans: 1 on positions below `lengths[i]` that
/// no span `(row, start, end)` (half-open, in tokens) of row `i` covers, 0 elsewhere.
pub fn spans_mask(lengths: &[i64], width: i64, spans: &[(i64, i64, i64)]) -> Result<Tensor> {
    if width < 0 {
        return Err(Error::value("width", "a width >= 0", width));
    }
    let rows = lengths.len();
    let w = width as usize;
    let mut out = vec![0i64; rows * w];
    for (i, &len) in lengths.iter().enumerate() {
        if len < 0 || len > width {
            return Err(Error::value(
                format!("lengths[{i}]"),
                format!("a length in [0, {width}]"),
                len,
            ));
        }
        out[i * w..i * w + len as usize].fill(1);
    }
    for (k, &(row, start, end)) in spans.iter().enumerate() {
        if row < 0 || row as usize >= rows {
            return Err(Error::value(
                format!("spans[{k}]"),
                format!("a row in [0, {rows})"),
                row,
            ));
        }
        let len = lengths[row as usize];
        if start < 0 || start > end || end > len {
            return Err(Error::value(
                format!("spans[{k}]"),
                format!("0 <= start <= end <= lengths[{row}] = {len}"),
                format!("({start}, {end})"),
            ));
        }
        let base = row as usize * w;
        out[base + start as usize..base + end as usize].fill(0);
    }
    Ok(Tensor::f_from_slice(&out)?.f_reshape([rows as i64, width])?)
}

#[cfg(test)]
mod tests;
