//! Advantage estimators: GAE, REINFORCE++, GRPO (and Dr. GRPO / TRL conventions), RLOO.
//!
//! Each returns `(advantages, returns)`, both `[B, T]` like the rewards. Formulas and conventions:
//! `shared/spec/rl_math.md`; defaults equal verl 0.9.1.

use rayon::prelude::*;
use tch::{Kind, Tensor};

use super::masked::{stats_cpu, stats_device, whiten_in_place, MASK_EPS};
use super::{
    compute_view, dense_groups, expect_same_shape, float_batch, Batch, Real, STREAM_BYTES,
};
use crate::error::{Error, Result};
use crate::parallel;
use crate::tensor::{self, TensorPath};

fn check_unit(arg: &str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::value(arg, "a value in [0, 1]", v))
    }
}

/// Checks that `t` is 1-D with one value per row of the batch.
fn expect_per_row(t: &Tensor, arg: &str, batch: &Batch) -> Result<()> {
    tensor::expect_ndim(t, arg, 1)?;
    let n = t.size()[0] as usize;
    if n != batch.rows {
        return Err(Error::shape(
            arg,
            format!(
                "one value per row of `token_level_rewards` ({} rows)",
                batch.rows
            ),
            format!("{n} values"),
        ));
    }
    Ok(())
}

fn check_nonempty(batch: &Batch, arg: &str) -> Result<()> {
    if batch.rows == 0 || batch.cols == 0 {
        return Err(Error::shape(
            arg,
            "a non-empty [B, T] batch",
            format!("[{}, {}]", batch.rows, batch.cols),
        ));
    }
    Ok(())
}

/// Generalised advantage estimation (verl's `compute_gae_advantage_return`).
///
/// Backward scan with `next_value = 0`, `last = 0`; masked steps carry the running values.
/// Returns `(masked_whiten(A), A + V)`.
pub fn gae(
    rewards: &Tensor,
    values: &Tensor,
    mask: &Tensor,
    gamma: f64,
    lam: f64,
    path: TensorPath,
) -> Result<(Tensor, Tensor)> {
    let batch = float_batch(rewards, "token_level_rewards")?;
    expect_same_shape(values, "values", rewards, "token_level_rewards")?;
    expect_same_shape(mask, "response_mask", rewards, "token_level_rewards")?;
    check_unit("gamma", gamma)?;
    check_unit("lam", lam)?;
    check_nonempty(&batch, "token_level_rewards")?;
    let (adv, ret) = match path.resolve(batch.device)? {
        TensorPath::Cpu => {
            let r = compute_view(rewards, batch.kind)?;
            let v = compute_view(values, batch.kind)?;
            let m = compute_view(mask, batch.kind)?;
            if batch.kind == Kind::Double {
                gae_cpu::<f64>(&r, &v, &m, gamma, lam, &batch)?
            } else {
                gae_cpu::<f32>(&r, &v, &m, gamma, lam, &batch)?
            }
        }
        _ => gae_device(rewards, values, mask, gamma, lam, &batch)?,
    };
    Ok((
        adv.f_to_kind(batch.out_kind)?,
        ret.f_to_kind(batch.out_kind)?,
    ))
}

fn gae_cpu<T: Real>(
    r: &Tensor,
    v: &Tensor,
    m: &Tensor,
    gamma: f64,
    lam: f64,
    b: &Batch,
) -> Result<(Tensor, Tensor)> {
    let shape = [b.rows as i64, b.cols as i64];
    let mut adv = tensor::empty_cpu::<T>(&shape)?;
    let mut ret = tensor::empty_cpu::<T>(&shape)?;
    {
        let (rs, vs, ms) = (
            tensor::cpu_slice::<T>(r, "token_level_rewards")?,
            tensor::cpu_slice::<T>(v, "values")?,
            tensor::cpu_slice::<T>(m, "response_mask")?,
        );
        let a_out = tensor::cpu_slice_mut::<T>(&mut adv, "advantages")?;
        let r_out = tensor::cpu_slice_mut::<T>(&mut ret, "returns")?;
        // The recurrence runs in the storage type, in verl's operation order.
        let g = T::from_f64(gamma).to_f64();
        let gl = T::from_f64(gamma * lam).to_f64();
        parallel::install(|| {
            a_out
                .par_chunks_mut(b.cols)
                .zip(r_out.par_chunks_mut(b.cols))
                .enumerate()
                .for_each(|(i, (arow, rrow))| {
                    let o = i * b.cols;
                    let (mut next_value, mut last) = (T::from_f64(0.0), T::from_f64(0.0));
                    for t in (0..b.cols).rev() {
                        let (rt, vt) = (rs[o + t], vs[o + t]);
                        let delta = T::from_f64(
                            T::from_f64(
                                rt.to_f64() + T::from_f64(g * next_value.to_f64()).to_f64(),
                            )
                            .to_f64()
                                - vt.to_f64(),
                        );
                        let new =
                            T::from_f64(delta.to_f64() + T::from_f64(gl * last.to_f64()).to_f64());
                        if ms[o + t].to_f64() != 0.0 {
                            next_value = vt;
                            last = new;
                        }
                        arow[t] = last;
                        rrow[t] = T::from_f64(last.to_f64() + vt.to_f64());
                    }
                })
        })?;
        let stats = stats_cpu(&*a_out, ms, "response_mask")?;
        whiten_in_place(a_out, stats)?;
    }
    Ok((adv, ret))
}

fn gae_device(
    r: &Tensor,
    v: &Tensor,
    m: &Tensor,
    gamma: f64,
    lam: f64,
    b: &Batch,
) -> Result<(Tensor, Tensor)> {
    let (r, v) = (r.f_to_kind(b.kind)?, v.f_to_kind(b.kind)?);
    let keep = m.f_ne(0.0)?;
    let mut next_value = r.f_select(1, 0)?.f_zeros_like()?;
    let mut last = next_value.f_zeros_like()?;
    let mut columns = Vec::with_capacity(b.cols);
    for t in (0..b.cols as i64).rev() {
        let (rt, vt, kt) = (r.f_select(1, t)?, v.f_select(1, t)?, keep.f_select(1, t)?);
        let delta = rt.f_add(&next_value.f_mul_scalar(gamma)?)?.f_sub(&vt)?;
        let new = delta.f_add(&last.f_mul_scalar(gamma * lam)?)?;
        next_value = vt.f_where_self(&kt, &next_value)?;
        last = new.f_where_self(&kt, &last)?;
        columns.push(last.shallow_clone());
    }
    columns.reverse();
    let adv = Tensor::f_stack(&columns, 1)?;
    let ret = adv.f_add(&v)?;
    let (mean, var) = stats_device(&adv, m, b.kind, "response_mask")?;
    let adv = adv
        .f_sub(&mean)?
        .f_mul(&var.f_add_scalar(MASK_EPS)?.f_rsqrt()?)?;
    Ok((adv, ret))
}

/// REINFORCE++: discounted returns (reset at masked steps), whitened over the batch, times mask.
pub fn reinforce_plus_plus(
    rewards: &Tensor,
    mask: &Tensor,
    gamma: f64,
    path: TensorPath,
) -> Result<(Tensor, Tensor)> {
    let batch = float_batch(rewards, "token_level_rewards")?;
    expect_same_shape(mask, "response_mask", rewards, "token_level_rewards")?;
    check_unit("gamma", gamma)?;
    check_nonempty(&batch, "token_level_rewards")?;
    let (adv, ret) = match path.resolve(batch.device)? {
        TensorPath::Cpu => {
            let r = compute_view(rewards, batch.kind)?;
            let m = compute_view(mask, batch.kind)?;
            if batch.kind == Kind::Double {
                rpp_cpu::<f64>(&r, &m, gamma, &batch)?
            } else {
                rpp_cpu::<f32>(&r, &m, gamma, &batch)?
            }
        }
        _ => {
            let r = rewards.f_to_kind(batch.kind)?;
            let keep = mask.f_ne(0.0)?;
            let mut run = r.f_select(1, 0)?.f_zeros_like()?;
            let mut columns = Vec::with_capacity(batch.cols);
            for t in (0..batch.cols as i64).rev() {
                let kt = keep.f_select(1, t)?;
                let new = r.f_select(1, t)?.f_add(&run.f_mul_scalar(gamma)?)?;
                columns.push(new.f_where_scalarother(&kt, 0.0)?);
                run = new.f_where_self(&kt, &run)?;
            }
            columns.reverse();
            let ret = Tensor::f_stack(&columns, 1)?;
            let (mean, var) = stats_device(&ret, mask, batch.kind, "response_mask")?;
            let m = mask.f_to_kind(batch.kind)?;
            let adv = ret
                .f_sub(&mean)?
                .f_mul(&var.f_add_scalar(MASK_EPS)?.f_rsqrt()?)?
                .f_mul(&m)?;
            (adv, ret)
        }
    };
    Ok((
        adv.f_to_kind(batch.out_kind)?,
        ret.f_to_kind(batch.out_kind)?,
    ))
}

fn rpp_cpu<T: Real>(r: &Tensor, m: &Tensor, gamma: f64, b: &Batch) -> Result<(Tensor, Tensor)> {
    let shape = [b.rows as i64, b.cols as i64];
    let mut ret = tensor::empty_cpu::<T>(&shape)?;
    let (rs, ms) = (
        tensor::cpu_slice::<T>(r, "token_level_rewards")?,
        tensor::cpu_slice::<T>(m, "response_mask")?,
    );
    let g = T::from_f64(gamma).to_f64();
    {
        let out = tensor::cpu_slice_mut::<T>(&mut ret, "returns")?;
        parallel::install(|| {
            out.par_chunks_mut(b.cols).enumerate().for_each(|(i, row)| {
                let o = i * b.cols;
                let mut run = T::from_f64(0.0);
                for t in (0..b.cols).rev() {
                    let new =
                        T::from_f64(rs[o + t].to_f64() + T::from_f64(g * run.to_f64()).to_f64());
                    if ms[o + t].to_f64() != 0.0 {
                        row[t] = new;
                        run = new;
                    } else {
                        row[t] = T::from_f64(0.0);
                    }
                }
            })
        })?;
    }
    let mut adv = tensor::empty_cpu::<T>(&shape)?;
    {
        let rets = tensor::cpu_slice::<T>(&ret, "returns")?;
        let stats = stats_cpu(rets, ms, "response_mask")?;
        let scale = 1.0 / (stats.var + MASK_EPS).sqrt();
        let a = tensor::cpu_slice_mut::<T>(&mut adv, "advantages")?;
        parallel::install(|| {
            a.par_chunks_mut(1 << 14)
                .zip(rets.par_chunks(1 << 14))
                .zip(ms.par_chunks(1 << 14))
                .for_each(|((ac, rc), mc)| {
                    for ((av, &rv), &mv) in ac.iter_mut().zip(rc).zip(mc) {
                        let w = T::from_f64((rv.to_f64() - stats.mean) * scale);
                        *av = T::from_f64(w.to_f64() * mv.to_f64());
                    }
                })
        })?;
    }
    Ok((adv, ret))
}

/// What a group of a single sample gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Singleton {
    /// verl: mean 0 and std 1 (GRPO), or the raw score (RLOO's loop version).
    Raw,
    /// TRL / verl's vectorised RLOO: advantage 0.
    Zero,
}

impl Singleton {
    /// Parses `"raw"` or `"zero"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "raw" => Ok(Self::Raw),
            "zero" => Ok(Self::Zero),
            other => Err(Error::value(
                "singleton",
                "one of 'raw', 'zero'",
                format!("{other:?}"),
            )),
        }
    }
}

/// Which outcome estimator [`outcome`] computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// GRPO: `(s - mean_g) / (std_g + eps)`, or `s - mean_g` without std normalisation.
    Grpo {
        norm_by_std: bool,
        epsilon: f64,
        singleton: Singleton,
    },
    /// Pass@k GRPO: only the best sample of each group gets `r_max - r_second` (divided by
    /// `std_g + eps` when `norm_by_std`); groups need at least 2 samples.
    GrpoPassk { norm_by_std: bool, epsilon: f64 },
    /// RLOO: `n/(n-1) (s - mean_g)`.
    Rloo { singleton: Singleton },
    /// OPO: `s - sum_j L_j s_j / sum_j L_j` (length-weighted group baseline; 0 for a singleton
    /// or a group whose rows are all empty).
    Opo,
    /// GPG: `alpha (s - mean_g)`, `alpha = B / max(count_nonzero(s), 1)` over the batch.
    Gpg,
    /// REINFORCE++ with a group baseline: `s - mean_g`, broadcast over the mask, whitened over the
    /// batch, times the mask.
    ReinforcePlusPlusBaseline,
}

struct GroupStats {
    mean: Vec<f64>,
    std: Vec<f64>,
    count: Vec<usize>,
}

fn group_stats(scores: &[f64], groups: &[usize], n_groups: usize) -> GroupStats {
    let mut sum = vec![0.0; n_groups];
    let mut count = vec![0usize; n_groups];
    for (&s, &g) in scores.iter().zip(groups) {
        sum[g] += s;
        count[g] += 1;
    }
    let mean: Vec<f64> = sum.iter().zip(&count).map(|(s, &n)| s / n as f64).collect();
    let mut sq = vec![0.0; n_groups];
    for (&s, &g) in scores.iter().zip(groups) {
        sq[g] += (s - mean[g]) * (s - mean[g]);
    }
    let std = sq
        .iter()
        .zip(&count)
        .map(|(q, &n)| {
            if n > 1 {
                (q / (n - 1) as f64).sqrt()
            } else {
                0.0
            }
        })
        .collect();
    GroupStats { mean, std, count }
}

/// Outcome advantages (GRPO family, RLOO): one scalar per sequence, broadcast over its mask.
///
/// `group_ids` is an int64 tensor `[B]` (any values; groups need not be contiguous).
pub fn outcome(
    rewards: &Tensor,
    mask: &Tensor,
    group_ids: &Tensor,
    estimator: Outcome,
    path: TensorPath,
) -> Result<(Tensor, Tensor)> {
    let batch = float_batch(rewards, "token_level_rewards")?;
    expect_same_shape(mask, "response_mask", rewards, "token_level_rewards")?;
    expect_per_row(group_ids, "group_ids", &batch)?;
    let ids = tensor::integer_as_i64(group_ids, "group_ids")?;
    if batch.rows == 0 {
        return Err(Error::shape(
            "token_level_rewards",
            "a non-empty batch",
            "0 rows",
        ));
    }
    if let Outcome::Grpo { epsilon, .. } | Outcome::GrpoPassk { epsilon, .. } = estimator {
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(Error::value("epsilon", "a finite value >= 0", epsilon));
        }
    }
    // Scores are per-row sums (in f64; non-finite rewards under mask 0 are ignored). Group
    // statistics are tiny (B values) and computed on the host in f64 in row order, so a constant
    // group gives exactly 0 whatever the summation order.
    let scores = row_scores(rewards, mask, &batch, path)?;
    let ids_cpu = tensor::contiguous(&ids.f_to_device(tch::Device::Cpu)?);
    let (groups, n_groups) = dense_groups(tensor::cpu_slice::<i64>(&ids_cpu, "group_ids")?);
    let st = group_stats(&scores, &groups, n_groups);
    let opo_baseline = if estimator == Outcome::Opo {
        let lengths = mask
            .f_to_kind(Kind::Double)?
            .f_sum_dim_intlist(1, false, Kind::Double)?;
        let lengths = lengths.f_to_device(tch::Device::Cpu)?;
        let lengths = tensor::cpu_slice::<f64>(&lengths, "response_mask")?;
        let (mut weighted, mut total) = (vec![0.0; n_groups], vec![0.0; n_groups]);
        for ((&sc, &g), &l) in scores.iter().zip(&groups).zip(lengths) {
            weighted[g] += l * sc;
            total[g] += l;
        }
        weighted
            .iter()
            .zip(&total)
            .map(|(w, t)| if *t > 0.0 { w / t } else { 0.0 })
            .collect()
    } else {
        Vec::new()
    };
    let passk = match estimator {
        Outcome::GrpoPassk { .. } => passk_winners(
            &scores,
            &groups,
            &st,
            tensor::cpu_slice::<i64>(&ids_cpu, "group_ids")?,
        )?,
        _ => Vec::new(),
    };
    let gpg_alpha = batch.rows as f64 / scores.iter().filter(|&&v| v != 0.0).count().max(1) as f64;
    let per_row: Vec<f64> = scores
        .iter()
        .zip(&groups)
        .map(|(&s, &g)| {
            let n = st.count[g];
            match estimator {
                Outcome::Grpo {
                    norm_by_std,
                    epsilon,
                    singleton,
                } => {
                    if n == 1 {
                        return match singleton {
                            Singleton::Zero => 0.0,
                            Singleton::Raw if norm_by_std => s / (1.0 + epsilon),
                            Singleton::Raw => s,
                        };
                    }
                    let centered = s - st.mean[g];
                    if norm_by_std {
                        centered / (st.std[g] + epsilon)
                    } else {
                        centered
                    }
                }
                Outcome::GrpoPassk { .. } => 0.0, // filled in below
                Outcome::Rloo { singleton } => {
                    if n == 1 {
                        return if singleton == Singleton::Raw { s } else { 0.0 };
                    }
                    let k = n as f64 / (n - 1) as f64;
                    s * k - st.mean[g] * k
                }
                Outcome::Opo if n == 1 => s,
                Outcome::Opo => s - opo_baseline[g],
                Outcome::Gpg if n == 1 => gpg_alpha * s,
                Outcome::Gpg => gpg_alpha * (s - st.mean[g]),
                Outcome::ReinforcePlusPlusBaseline if n == 1 => s,
                Outcome::ReinforcePlusPlusBaseline => s - st.mean[g],
            }
        })
        .collect();
    let mut per_row = per_row;
    if let Outcome::GrpoPassk {
        norm_by_std,
        epsilon,
    } = estimator
    {
        for (g, &(winner, gap)) in passk.iter().enumerate() {
            per_row[winner] = if norm_by_std {
                gap / (st.std[g] + epsilon)
            } else {
                gap
            };
        }
    }
    let adv = broadcast_rows(&per_row, mask, &batch, path)?;
    if estimator == Outcome::ReinforcePlusPlusBaseline {
        let m = mask.f_to_kind(batch.out_kind)?;
        let adv = super::masked::masked_whiten(&adv, mask, path)?.f_mul(&m)?;
        return Ok((adv.shallow_clone(), adv));
    }
    Ok((adv.shallow_clone(), adv))
}

/// For each group: the row of its best score (the first in row order among ties) and the gap to
/// the second best score. Errors on a group of one sample.
fn passk_winners(
    scores: &[f64],
    groups: &[usize],
    st: &GroupStats,
    ids: &[i64],
) -> Result<Vec<(usize, f64)>> {
    if let Some(g) = st.count.iter().position(|&n| n < 2) {
        let id = groups.iter().position(|&x| x == g).map(|row| ids[row]);
        return Err(Error::value(
            "group_ids",
            "groups of at least 2 samples (pass@k compares the best with the second best)",
            format!("a group of 1 sample (id {})", id.unwrap_or_default()),
        ));
    }
    let n_groups = st.count.len();
    let mut best: Vec<Option<(usize, f64)>> = vec![None; n_groups];
    let mut second = vec![f64::NEG_INFINITY; n_groups];
    for (row, (&s, &g)) in scores.iter().zip(groups).enumerate() {
        match best[g] {
            Some((_, b)) if s <= b || s.is_nan() => {
                if s > second[g] || s.is_nan() {
                    second[g] = s;
                }
            }
            Some((_, b)) => {
                second[g] = b;
                best[g] = Some((row, s));
            }
            None => best[g] = Some((row, s)),
        }
    }
    Ok(best
        .into_iter()
        .zip(second)
        .map(|(b, sec)| {
            let (row, v) = b.unwrap_or((0, 0.0));
            (row, v - sec)
        })
        .collect())
}

/// Per-row sums of the rewards in f64 (host vector), skipping non-finite values under mask 0.
fn row_scores(rewards: &Tensor, mask: &Tensor, b: &Batch, path: TensorPath) -> Result<Vec<f64>> {
    match path.resolve(b.device)? {
        TensorPath::Cpu => {
            let r = compute_view(rewards, b.kind)?;
            let m = compute_view(mask, b.kind)?;
            if b.kind == Kind::Double {
                row_scores_cpu::<f64>(&r, &m, b.cols)
            } else {
                row_scores_cpu::<f32>(&r, &m, b.cols)
            }
        }
        _ => {
            let r = rewards.f_to_kind(Kind::Double)?;
            let keep = mask.f_ne(0.0)?.f_logical_or(&r.f_isfinite()?)?;
            let s = r
                .f_where_scalarother(&keep, 0.0)?
                .f_sum_dim_intlist(1, false, Kind::Double)?;
            let s = s.f_to_device(tch::Device::Cpu)?;
            Ok(tensor::cpu_slice::<f64>(&s, "scores")?.to_vec())
        }
    }
}

fn row_scores_cpu<T: Real>(r: &Tensor, m: &Tensor, cols: usize) -> Result<Vec<f64>> {
    let (rs, ms) = (
        tensor::cpu_slice::<T>(r, "token_level_rewards")?,
        tensor::cpu_slice::<T>(m, "response_mask")?,
    );
    let rows = rs.len() / cols.max(1);
    parallel::map_indices(rows, rows_per_item(cols), &|i| {
        let rrow = &rs[i * cols..(i + 1) * cols];
        let s = T::row_sum(rrow);
        if s.is_finite() {
            return s;
        }
        // A non-finite reward somewhere in the row: only those under mask 1 count. The
        // mask is read for such rows only, so the common case is one pass over rewards.
        let mrow = &ms[i * cols..(i + 1) * cols];
        let mut lanes = [0.0f64; LANES];
        for (k, (&rv, &mv)) in rrow.iter().zip(mrow).enumerate() {
            let x = rv.to_f64();
            if x.is_finite() || mv.to_f64() != 0.0 {
                lanes[k % LANES] += x;
            }
        }
        fold_lanes(&lanes)
    })
}

/// Rows per work item of the row passes: about 64 KiB of f32 per item (a few hundred items for
/// a 16 MB batch), so threads that wake late still find work and claiming costs nothing.
fn rows_per_item(cols: usize) -> usize {
    (16_384 / cols.max(1)).max(1)
}

/// Accumulator lanes of row sums: element `k` goes to lane `k % LANES`, and the lanes are folded
/// in a fixed order, so the result depends on the row alone (never on threads or chunking) and
/// the loop is not bound by the latency of one chain of additions.
const LANES: usize = 8;

/// Row sum in f64: element `k` into lane `k % LANES`, lanes folded in a fixed order.
#[inline(always)]
pub(crate) fn lane_sum<T: Real>(row: &[T]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v.to_f64();
        }
    }
    for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += v.to_f64();
    }
    fold_lanes(&lanes)
}

crate::simd::avx2_dispatch! {
    /// [`lane_sum`] of an f32 row compiled for AVX2 where the CPU has it (4 f64 lanes per
    /// register); the same additions in the same order, so the same bits as the baseline copy.
    pub(crate) fn lane_sum_f32(row: &[f32]) -> f64 => lane_sum_f32_body
}

#[inline(always)]
fn lane_sum_f32_body(row: &[f32]) -> f64 {
    lane_sum(row)
}

#[inline(always)]
fn fold_lanes(l: &[f64; LANES]) -> f64 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// `out[i, t] = a[i] * mask[i, t]` in the batch's compute dtype, then the input dtype.
fn broadcast_rows(per_row: &[f64], mask: &Tensor, b: &Batch, path: TensorPath) -> Result<Tensor> {
    let out = match path.resolve(b.device)? {
        TensorPath::Cpu => {
            let m = compute_view(mask, b.kind)?;
            if b.kind == Kind::Double {
                broadcast_cpu::<f64>(per_row, &m, b)?
            } else {
                broadcast_cpu::<f32>(per_row, &m, b)?
            }
        }
        _ => {
            let a = Tensor::f_from_slice(per_row)?
                .f_to_kind(b.kind)?
                .f_to_device(b.device)?;
            a.f_unsqueeze(1)?.f_mul(&mask.f_to_kind(b.kind)?)?
        }
    };
    Ok(out.f_to_kind(b.out_kind)?)
}

fn broadcast_cpu<T: Real>(per_row: &[f64], m: &Tensor, b: &Batch) -> Result<Tensor> {
    let mut out = tensor::empty_cpu::<T>(&[b.rows as i64, b.cols as i64])?;
    let ms = tensor::cpu_slice::<T>(m, "response_mask")?;
    let o = tensor::cpu_slice_mut::<T>(&mut out, "advantages")?;
    // Outputs far larger than the caches are streamed to memory (see `Real::scale_row`).
    let stream = std::mem::size_of_val(o) >= STREAM_BYTES;
    let cols = b.cols.max(1);
    let rows = rows_per_item(cols);
    parallel::for_each_chunk_mut(o, rows * cols, &|k, chunk| {
        for (j, row) in chunk.chunks_mut(cols).enumerate() {
            let i = k * rows + j;
            // Rounded once to T, then multiplied in T, as verl does.
            T::scale_row(
                row,
                &ms[i * cols..(i + 1) * cols],
                T::from_f64(per_row[i]),
                stream,
            );
        }
        if stream {
            crate::simd::store_fence();
        }
    })?;
    Ok(out)
}

/// ReMax: returns `G = reverse cumsum(r * m)` and advantages `G - b_i * m`.
pub fn remax(
    rewards: &Tensor,
    mask: &Tensor,
    reward_baselines: &Tensor,
    path: TensorPath,
) -> Result<(Tensor, Tensor)> {
    let batch = float_batch(rewards, "token_level_rewards")?;
    expect_same_shape(mask, "response_mask", rewards, "token_level_rewards")?;
    expect_per_row(reward_baselines, "reward_baselines", &batch)?;
    tensor::expect_device(reward_baselines, "reward_baselines", batch.device)?;
    check_nonempty(&batch, "token_level_rewards")?;
    let kind = batch.kind;
    let (r, m) = (rewards.f_to_kind(kind)?, mask.f_to_kind(kind)?);
    let b = reward_baselines.f_to_kind(kind)?;
    let _ = path; // one fused tch expression serves both paths (two passes over memory either way)
    let keep = m.f_ne(0.0)?;
    let rm = r.f_mul(&m)?.f_where_scalarother(&keep, 0.0)?;
    let returns = rm.f_flip([1])?.f_cumsum(1, kind)?.f_flip([1])?;
    let adv = returns.f_sub(&b.f_unsqueeze(1)?.f_mul(&m)?)?;
    Ok((
        adv.f_to_kind(batch.out_kind)?,
        returns.f_to_kind(batch.out_kind)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_of_the_baseline_and_avx2_copies_agree() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in [0usize, 1, 7, 8, 9, 63, 1024, 1031] {
            let row: Vec<f32> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / 1e4 - 800.0
                })
                .collect();
            assert_eq!(
                lane_sum(&row).to_bits(),
                lane_sum_f32(&row).to_bits(),
                "len {len}"
            );
        }
    }

    #[test]
    fn dense_groups_table_and_hash_agree() {
        let cases: Vec<Vec<i64>> = vec![
            vec![],
            vec![5],
            vec![3, 3, 1, 3, 0, 1],
            vec![-7, 100, -7, 2, 100],
            vec![i64::MIN, i64::MAX, 0, i64::MIN],
            (0..4096).map(|i| i / 16).collect(),
            (0..500).map(|i| (i * 7919) % 101 - 50).collect(),
            (0..50).map(|i| i * 1_000_000).collect(),
        ];
        for ids in cases {
            assert_eq!(
                super::super::dense_groups(&ids),
                super::super::dense_groups_hashed(&ids),
                "{ids:?}"
            );
        }
    }
    use tch::Device;

    fn t(rows: &[&[f32]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).reshape([rows.len() as i64, rows[0].len() as i64])
    }

    #[test]
    fn gae_returns_hand_worked() {
        // gamma 0.5, lam 1, V = 0: returns are the discounted rewards; masked steps carry over.
        let r = t(&[&[0.0, 0.0, 1.0], &[1.0, 0.0, 0.0]]);
        let m = t(&[&[1.0, 1.0, 1.0], &[1.0, 0.0, 0.0]]);
        let v = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        for path in [TensorPath::Cpu, TensorPath::Device] {
            let (_, ret) = gae(&r, &v, &m, 0.5, 1.0, path).unwrap();
            let want = t(&[&[0.25, 0.5, 1.0], &[1.0, 0.0, 0.0]]);
            assert!(ret.allclose(&want, 1e-6, 1e-7, false), "{path:?}");
        }
    }

    #[test]
    fn grpo_constant_group_is_zero_and_singleton_options() {
        let r = t(&[&[0.1], &[0.1], &[0.1], &[2.0]]);
        let m = Tensor::ones([4, 1], (Kind::Float, Device::Cpu));
        let ids = Tensor::from_slice(&[5i64, 5, 5, 9]);
        let raw = Outcome::Grpo {
            norm_by_std: true,
            epsilon: 1e-6,
            singleton: Singleton::Raw,
        };
        let (a, _) = outcome(&r, &m, &ids, raw, TensorPath::Cpu).unwrap();
        let a: Vec<f32> = Vec::try_from(a.flatten(0, 1)).unwrap();
        assert_eq!(&a[..3], &[0.0, 0.0, 0.0]);
        assert!((a[3] - 2.0 / (1.0 + 1e-6)).abs() < 1e-6);
        let zero = Outcome::Grpo {
            norm_by_std: true,
            epsilon: 1e-4,
            singleton: Singleton::Zero,
        };
        let (z, _) = outcome(&r, &m, &ids, zero, TensorPath::Device).unwrap();
        assert_eq!(z.double_value(&[3, 0]), 0.0);
    }

    #[test]
    fn bad_inputs_name_arguments() {
        let r = t(&[&[1.0, 2.0]]);
        let m = t(&[&[1.0, 1.0]]);
        match gae(&r, &m, &m, 1.5, 1.0, TensorPath::Cpu) {
            Err(Error::Value(e)) => assert_eq!(e.arg, "gamma"),
            other => panic!("{other:?}"),
        }
        let ids = Tensor::from_slice(&[1i64, 2]);
        let est = Outcome::Rloo {
            singleton: Singleton::Raw,
        };
        match outcome(&r, &m, &ids, est, TensorPath::Cpu) {
            Err(Error::Shape(e)) => assert_eq!(e.arg, "group_ids"),
            other => panic!("{other:?}"),
        }
    }
}
