//! Policy losses (vanilla dual-clip PPO, GSPO, GPG, CISPO) and loss aggregation.
//!
//! Every aggregation mode is a weighted sum `loss = sum_i c_i * sum_t L[i,t] * m[i,t]` with a
//! per-row coefficient `c_i` that depends on the mask only (see [`AggMode::row_coefficients`]).
//! So the CPU path computes a loss in one fused pass and its gradient with respect to `log_prob`
//! in another: `c_i * m[i,t] * dL[i,t]/dlog_prob[i,t]`, the gradient torch's autograd gives for
//! verl's composition (ties of `maximum`/`minimum` split the gradient in halves, `clamp` passes it
//! on its closed interval). Positions under mask 0 never contribute, even when they hold NaN.
//!
//! The device path composes tch ops as verl does; libtorch's autograd differentiates it.

use rayon::prelude::*;
use tch::{Kind, Tensor};

use super::masked::MASK_EPS;
use super::{compute_view, expect_same_shape, float_batch, round_to, Batch, Real};
use crate::error::{Error, Result};
use crate::parallel;
use crate::tensor::{self, TensorPath};

/// The valid aggregation mode names, for error messages.
pub const AGG_MODES: &str = "one of 'token-mean', 'token-sum', 'seq-mean-token-sum', \
     'seq-mean-token-mean', 'seq-mean-token-sum-norm'";

/// How a `[B, T]` loss matrix becomes a scalar (verl's `loss_agg_mode`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggMode {
    /// `sum(L*m) / sum(m)`.
    TokenMean,
    /// `sum(L*m)`.
    TokenSum,
    /// `sum_i(sum_t L*m) / N_s`, N_s = rows with any mask.
    SeqMeanTokenSum,
    /// `sum_i[sum_t L*m / (sum_t m + 1e-8)] / N_s`.
    SeqMeanTokenMean,
    /// `sum_i(sum_t L*m) / N_s / loss_scale_factor` (default T): Dr. GRPO's aggregation.
    SeqMeanTokenSumNorm { loss_scale_factor: Option<f64> },
}

impl AggMode {
    /// Parses verl's names.
    pub fn parse(name: &str, loss_scale_factor: Option<f64>) -> Result<Self> {
        if let Some(f) = loss_scale_factor {
            if !(f.is_finite() && f > 0.0) {
                return Err(Error::value(
                    "loss_scale_factor",
                    "a finite value > 0 (or None for T)",
                    f,
                ));
            }
        }
        Ok(match name {
            "token-mean" => Self::TokenMean,
            "token-sum" => Self::TokenSum,
            "seq-mean-token-sum" => Self::SeqMeanTokenSum,
            "seq-mean-token-mean" => Self::SeqMeanTokenMean,
            "seq-mean-token-sum-norm" => Self::SeqMeanTokenSumNorm { loss_scale_factor },
            other => return Err(Error::value("agg", AGG_MODES, format!("{other:?}"))),
        })
    }

    /// `c_i` for every row from the row mask sums `n_i` (`cols` = T).
    pub fn row_coefficients(self, n: &[f64], cols: usize) -> Vec<f64> {
        let n_seq = n.iter().filter(|&&v| v > 0.0).count() as f64;
        let seq = |v: f64, scale: f64| if v > 0.0 { 1.0 / (n_seq * scale) } else { 0.0 };
        match self {
            Self::TokenMean => {
                let total: f64 = n.iter().sum();
                vec![1.0 / total; n.len()]
            }
            Self::TokenSum => vec![1.0; n.len()],
            Self::SeqMeanTokenSum => n.iter().map(|&v| seq(v, 1.0)).collect(),
            Self::SeqMeanTokenMean => n.iter().map(|&v| seq(v, v + MASK_EPS)).collect(),
            Self::SeqMeanTokenSumNorm { loss_scale_factor } => {
                let f = loss_scale_factor.unwrap_or(cols as f64);
                n.iter().map(|&v| seq(v, f)).collect()
            }
        }
    }

    /// verl's `agg_loss` in tch ops (differentiable by libtorch).
    fn device(self, loss: &Tensor, mask: &Tensor, kind: Kind) -> Result<Tensor> {
        let m = mask.f_to_kind(kind)?;
        let keep = m.f_ne(0.0)?;
        let lm = loss.f_where_scalarother(&keep, 0.0)?.f_mul(&m)?;
        let seq_mean = |seq_losses: &Tensor, counts: &Tensor| -> Result<Tensor> {
            let seq_mask = counts.f_gt(0.0)?;
            let total = seq_losses
                .f_where_scalarother(&seq_mask, 0.0)?
                .f_sum(kind)?;
            Ok(total.f_div(&seq_mask.f_sum(kind)?)?)
        };
        let counts = m.f_sum_dim_intlist(1, false, kind)?;
        Ok(match self {
            Self::TokenMean => lm.f_sum(kind)?.f_div(&m.f_sum(kind)?)?,
            Self::TokenSum => lm.f_sum(kind)?,
            Self::SeqMeanTokenSum => seq_mean(&lm.f_sum_dim_intlist(1, false, kind)?, &counts)?,
            Self::SeqMeanTokenMean => {
                let per = lm
                    .f_sum_dim_intlist(1, false, kind)?
                    .f_div(&counts.f_add_scalar(MASK_EPS)?)?;
                seq_mean(&per, &counts)?
            }
            Self::SeqMeanTokenSumNorm { loss_scale_factor } => {
                let f = loss_scale_factor.unwrap_or(m.size()[1] as f64);
                seq_mean(&lm.f_sum_dim_intlist(1, false, kind)?, &counts)?.f_div_scalar(f)?
            }
        })
    }
}

/// The policy losses of the spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyKind {
    /// PPO clip with dual clip for negative advantages.
    Vanilla,
    /// Sequence-level ratio (GSPO), no dual clip.
    Gspo,
    /// `-log_prob * A`.
    Gpg,
    /// `-sg(clip(r, max = 1 + eps_high)) * A * log_prob`.
    Cispo,
}

/// The valid policy loss names.
pub const POLICY_KINDS: &str = "one of 'vanilla', 'gspo', 'gpg', 'cispo'";

impl PolicyKind {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "vanilla" => Self::Vanilla,
            "gspo" => Self::Gspo,
            "gpg" => Self::Gpg,
            "cispo" => Self::Cispo,
            other => return Err(Error::value("kind", POLICY_KINDS, format!("{other:?}"))),
        })
    }
}

/// A policy loss with its clip parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLoss {
    pub kind: PolicyKind,
    pub clip_low: f64,
    pub clip_high: f64,
    pub clip_c: f64,
    pub agg: AggMode,
}

impl PolicyLoss {
    /// Validates the clip parameters (verl asserts `clip_ratio_c > 1` for the dual clip).
    pub fn new(
        kind: PolicyKind,
        clip_low: f64,
        clip_high: f64,
        clip_c: f64,
        agg: AggMode,
    ) -> Result<Self> {
        for (arg, v) in [("clip_ratio_low", clip_low), ("clip_ratio_high", clip_high)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::value(arg, "a finite value >= 0", v));
            }
        }
        if kind == PolicyKind::Vanilla && !(clip_c.is_finite() && clip_c > 1.0) {
            return Err(Error::value(
                "clip_ratio_c",
                "a finite value > 1 (the dual-clip lower bound)",
                clip_c,
            ));
        }
        Ok(Self {
            kind,
            clip_low,
            clip_high,
            clip_c,
            agg,
        })
    }

    /// Per-token loss and its derivative with respect to `log_prob`, plus the metric indicators
    /// (clipped, clipped-lower) and the `ppo_kl` term, in the storage type as torch computes them.
    /// `seq` is the row's mean log-ratio (GSPO).
    #[cfg(test)]
    fn token<T: Real>(self, old: T, lp: T, a: T, seq: T) -> Token<T> {
        match self.kind {
            PolicyKind::Vanilla => self.token_k::<T, VANILLA>(old, lp, a, seq),
            PolicyKind::Gspo => self.token_k::<T, GSPO>(old, lp, a, seq),
            PolicyKind::Gpg => self.token_k::<T, GPG>(old, lp, a, seq),
            PolicyKind::Cispo => self.token_k::<T, CISPO>(old, lp, a, seq),
        }
    }

    /// [`Self::token`] for the kind `K` (a constant, so the loops over it have no branch on it).
    #[inline(always)]
    fn token_k<T: Real, const K: u8>(self, old: T, lp: T, a: T, seq: T) -> Token<T> {
        let c = |v: f64| T::from_f64(v);
        let zero = c(0.0);
        let (lo, hi) = (c(1.0 - self.clip_low), c(1.0 + self.clip_high));
        let raw = lp - old;
        match K {
            VANILLA => {
                // Branch-free (selects): advantage signs and clip outcomes are data-dependent and
                // would mispredict.
                let d = raw.clamp_to(c(-20.0), c(20.0));
                let r = d.exp_bounded();
                let dr = sel((raw >= c(-20.0)) & (raw <= c(20.0)), r, zero);
                let (l1, l2) = (-a * r, -a * r.clamp_to(lo, hi));
                let (g1, g2) = (-a, sel((r >= lo) & (r <= hi), -a, zero));
                let (lc, gc) = max_grad(l1, g1, l2, g2);
                let l3 = -a * c(self.clip_c);
                let (dual, gdual) = min_grad(l3, zero, lc, gc);
                let neg = a < zero;
                Token {
                    loss: sel(neg, dual, lc),
                    grad: sel(neg, gdual, gc) * dr,
                    clipped: l2 > l1,
                    lower: neg & (lc > l3),
                    neg_kl: -d,
                }
            }
            GSPO => {
                // log r = lp - sg(lp) + sg(seq): the value is seq, the slope 1 (clamped at 10).
                let log_r = sel(seq > c(10.0), c(10.0), seq);
                let r = log_r.exp_bounded();
                let dr = sel(seq <= c(10.0), r, zero);
                let (l1, l2) = (-a * r, -a * r.clamp_to(lo, hi));
                let (g1, g2) = (-a, sel((r >= lo) & (r <= hi), -a, zero));
                let (loss, g) = max_grad(l1, g1, l2, g2);
                Token {
                    loss,
                    grad: g * dr,
                    clipped: l2 > l1,
                    lower: false,
                    neg_kl: -raw,
                }
            }
            GPG => Token {
                loss: -lp * a,
                grad: -a,
                clipped: false,
                lower: false,
                neg_kl: zero,
            },
            _ => {
                let d = raw.clamp_to(c(-20.0), c(20.0));
                let r = d.exp_bounded();
                let w = r.clamp_to(lo, hi);
                Token {
                    loss: -w * a * lp,
                    grad: -w * a,
                    clipped: r != w,
                    lower: false,
                    neg_kl: -d,
                }
            }
        }
    }
}

/// Tokens per chunk of the forward pass (results never depend on it).
const CHUNK_T: usize = 256;

const VANILLA: u8 = 0;
const GSPO: u8 = 1;
const GPG: u8 = 2;
const CISPO: u8 = 3;

impl PolicyKind {
    fn code(self) -> u8 {
        match self {
            Self::Vanilla => VANILLA,
            Self::Gspo => GSPO,
            Self::Gpg => GPG,
            Self::Cispo => CISPO,
        }
    }
}

struct Token<T> {
    loss: T,
    grad: T,
    clipped: bool,
    lower: bool,
    neg_kl: T,
}

/// `if c { a } else { b }`, which LLVM lowers to a select (no branch) for floats.
#[inline(always)]
fn sel<T: Real>(c: bool, a: T, b: T) -> T {
    if c {
        a
    } else {
        b
    }
}

/// `max(a, b)` and its derivative (torch: halves on ties; NaN propagates).
#[inline(always)]
fn max_grad<T: Real>(a: T, ga: T, b: T, gb: T) -> (T, T) {
    let (gt, lt) = (a > b, a < b);
    let half = T::from_f64(0.5);
    let value = sel(gt | a.is_nan(), a, b);
    (value, sel(gt, ga, sel(lt, gb, half * ga + half * gb)))
}

/// `min(a, b)` and its derivative (torch: halves on ties; NaN propagates).
#[inline(always)]
fn min_grad<T: Real>(a: T, ga: T, b: T, gb: T) -> (T, T) {
    let (lt, gt) = (a < b, a > b);
    let half = T::from_f64(0.5);
    let value = sel(lt | a.is_nan(), a, b);
    (value, sel(lt, ga, sel(gt, gb, half * ga + half * gb)))
}

/// A policy loss's value, its metrics and what the backward pass needs.
pub struct LossForward {
    /// 0-d tensor in the input dtype (no autograd history on the CPU path).
    pub loss: Tensor,
    /// Masked mean of the clipped indicator (`actor/pg_clipfrac`).
    pub clipfrac: f64,
    /// Masked mean of `-(log_prob - old_log_prob)` (`actor/ppo_kl`).
    pub ppo_kl: f64,
    /// Masked mean of the dual-clip indicator (`actor/pg_clipfrac_lower`).
    pub clipfrac_lower: f64,
    /// `[B]` float64: the aggregation coefficients `c_i` (CPU path; empty on the device path).
    pub row_coef: Tensor,
    /// `[B]` float64: GSPO's per-row mean log-ratio (CPU path; zeros for other kinds).
    pub row_seq: Tensor,
}

struct Inputs {
    batch: Batch,
    views: [Tensor; 4],
}

fn check_inputs(
    old: &Tensor,
    lp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    path: TensorPath,
) -> Result<(Batch, TensorPath)> {
    let batch = float_batch(lp, "log_prob")?;
    expect_same_shape(old, "old_log_prob", lp, "log_prob")?;
    expect_same_shape(adv, "advantages", lp, "log_prob")?;
    expect_same_shape(mask, "response_mask", lp, "log_prob")?;
    super::float_kind_of(old, "old_log_prob")?;
    super::float_kind_of(adv, "advantages")?;
    if batch.rows == 0 || batch.cols == 0 {
        return Err(Error::shape(
            "log_prob",
            "a non-empty [B, T] batch",
            format!("[{}, {}]", batch.rows, batch.cols),
        ));
    }
    let path = path.resolve(batch.device)?;
    Ok((batch, path))
}

fn cpu_inputs(
    old: &Tensor,
    lp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    batch: Batch,
) -> Result<Inputs> {
    let k = batch.kind;
    Ok(Inputs {
        views: [
            compute_view(old, k)?,
            compute_view(&lp.f_detach()?, k)?,
            compute_view(adv, k)?,
            compute_view(mask, k)?,
        ],
        batch,
    })
}

/// The loss `spec` over `[B, T]` inputs, with verl's metrics.
pub fn policy_loss(
    spec: PolicyLoss,
    old: &Tensor,
    lp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    path: TensorPath,
) -> Result<LossForward> {
    let (batch, path) = check_inputs(old, lp, adv, mask, path)?;
    if path != TensorPath::Cpu {
        return policy_loss_device(spec, old, lp, adv, mask, &batch);
    }
    let inp = cpu_inputs(old, lp, adv, mask, batch)?;
    if inp.batch.kind == Kind::Double {
        forward_cpu::<f64>(spec, &inp)
    } else {
        forward_cpu::<f32>(spec, &inp)
    }
}

/// Per-row sums of the forward pass.
#[derive(Default, Clone, Copy)]
struct RowSums {
    loss: f64,
    n: f64,
    clipped: f64,
    lower: f64,
    neg_kl: f64,
    seq: f64,
}

fn slices<T: Real>(inp: &Inputs) -> Result<[&[T]; 4]> {
    let names = ["old_log_prob", "log_prob", "advantages", "response_mask"];
    let mut out: [&[T]; 4] = [&[]; 4];
    for (k, (v, name)) in inp.views.iter().zip(names).enumerate() {
        out[k] = tensor::cpu_slice::<T>(v, name)?;
    }
    Ok(out)
}

fn forward_cpu<T: Real>(spec: PolicyLoss, inp: &Inputs) -> Result<LossForward> {
    let rows = match spec.kind.code() {
        VANILLA => forward_rows::<T, VANILLA>(spec, inp)?,
        GSPO => forward_rows::<T, GSPO>(spec, inp)?,
        GPG => forward_rows::<T, GPG>(spec, inp)?,
        _ => forward_rows::<T, CISPO>(spec, inp)?,
    };
    let cols = inp.batch.cols;
    let n: Vec<f64> = rows.iter().map(|s| s.n).collect();
    let coef = spec.agg.row_coefficients(&n, cols);
    let total_n: f64 = n.iter().sum::<f64>() + MASK_EPS;
    let mut loss = 0.0;
    let (mut clipped, mut lower, mut neg_kl) = (0.0, 0.0, 0.0);
    for (s, &c) in rows.iter().zip(&coef) {
        if c != 0.0 {
            loss += c * s.loss;
        }
        clipped += s.clipped;
        lower += s.lower;
        neg_kl += s.neg_kl;
    }
    if spec.agg == AggMode::TokenMean && total_n <= MASK_EPS {
        loss = f64::NAN; // 0 / 0, as verl
    }
    let seq: Vec<f64> = rows.iter().map(|s| s.seq).collect();
    Ok(LossForward {
        loss: Tensor::f_from_slice(&[loss])?
            .f_reshape([])?
            .f_to_kind(inp.batch.out_kind)?,
        clipfrac: round_to(inp.batch.kind, clipped / total_n),
        ppo_kl: round_to(inp.batch.kind, neg_kl / total_n),
        clipfrac_lower: round_to(inp.batch.kind, lower / total_n),
        row_coef: Tensor::f_from_slice(&coef)?,
        row_seq: Tensor::f_from_slice(&seq)?,
    })
}

/// Per-row sums of the forward pass for the policy loss of kind `K`.
fn forward_rows<T: Real, const K: u8>(spec: PolicyLoss, inp: &Inputs) -> Result<Vec<RowSums>> {
    let [old, lp, adv, m] = slices::<T>(inp)?;
    let (cols, n_rows) = (inp.batch.cols, inp.batch.rows);
    parallel::install(|| {
        (0..n_rows)
            .into_par_iter()
            .map(|i| {
                let range = i * cols..(i + 1) * cols;
                forward_row::<T, K>(
                    spec,
                    &old[range.clone()],
                    &lp[range.clone()],
                    &adv[range.clone()],
                    &m[range],
                )
            })
            .collect()
    })
}

/// [`forward_row_body`] compiled for the widest vector extension the CPU has
/// ([`crate::simd::widest`]: the same bits in every copy).
fn forward_row<T: Real, const K: u8>(
    spec: PolicyLoss,
    o: &[T],
    l: &[T],
    a: &[T],
    w: &[T],
) -> RowSums {
    crate::simd::widest(
        #[inline(always)]
        || forward_row_body::<T, K>(spec, o, l, a, w),
    )
}

/// One row's sums of the forward pass (old and new log-probs, advantages, mask).
#[inline(always)]
fn forward_row_body<T: Real, const K: u8>(
    spec: PolicyLoss,
    o: &[T],
    l: &[T],
    a: &[T],
    w: &[T],
) -> RowSums {
    let cols = o.len();
    let mut s = RowSums::default();
    if K == GSPO {
        s.seq = seq_log_ratio(o, l, w);
    }
    let seq = T::from_f64(s.seq);
    let zero = T::from_f64(0.0);
    // Two loops per chunk: a branch-free one that the compiler vectorises (the
    // exponential dominates), then the f64 sums in token order.
    let mut buf = [[zero; CHUNK_T]; 4];
    for start in (0..cols).step_by(CHUNK_T) {
        let end = (start + CHUNK_T).min(cols);
        let len = end - start;
        let [bl, bc, bw, bk] = &mut buf;
        for (((((((o, l), a), w), bl), bc), bw), bk) in o[start..end]
            .iter()
            .zip(&l[start..end])
            .zip(&a[start..end])
            .zip(&w[start..end])
            .zip(&mut bl[..len])
            .zip(&mut bc[..len])
            .zip(&mut bw[..len])
            .zip(&mut bk[..len])
        {
            let tok = spec.token_k::<T, K>(*o, *l, *a, seq);
            // Selects, not branches: positions under mask 0 add exactly 0 (even NaN).
            let on = *w != zero;
            *bl = sel(on, tok.loss * *w, zero);
            *bc = sel(on & tok.clipped, *w, zero);
            *bw = sel(on & tok.lower, *w, zero);
            *bk = sel(on, tok.neg_kl * *w, zero);
        }
        for k in 0..len {
            s.loss += bl[k].to_f64();
            s.clipped += bc[k].to_f64();
            s.lower += bw[k].to_f64();
            s.neg_kl += bk[k].to_f64();
            s.n += w[start + k].to_f64();
        }
    }
    s
}

/// GSPO's per-row mean log-ratio: `sum((lp - old) * m) / max(sum(m), 1)` over positions with
/// `m != 0`.
fn seq_log_ratio<T: Real>(old: &[T], lp: &[T], m: &[T]) -> f64 {
    let (mut s, mut n) = (0.0, 0.0);
    for ((o, l), w) in old.iter().zip(lp).zip(m) {
        let w = w.to_f64();
        if w != 0.0 {
            s += (l.to_f64() - o.to_f64()) * w;
            n += w;
        }
    }
    s / n.max(1.0)
}

/// Gradient of `grad_out * loss` with respect to `log_prob` on the CPU path, from the row
/// coefficients and GSPO row ratios of [`policy_loss`].
#[allow(clippy::too_many_arguments)]
pub fn policy_loss_backward(
    spec: PolicyLoss,
    grad_out: f64,
    old: &Tensor,
    lp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    row_coef: &Tensor,
    row_seq: &Tensor,
) -> Result<Tensor> {
    let (batch, _) = check_inputs(old, lp, adv, mask, TensorPath::Cpu)?;
    let coef = row_vector(row_coef, "row_coef", batch.rows)?;
    let seq = row_vector(row_seq, "row_seq", batch.rows)?;
    let out_kind = batch.out_kind;
    let inp = cpu_inputs(old, lp, adv, mask, batch)?;
    let g = if inp.batch.kind == Kind::Double {
        backward_cpu::<f64>(spec, grad_out, &inp, &coef, &seq)?
    } else {
        backward_cpu::<f32>(spec, grad_out, &inp, &coef, &seq)?
    };
    Ok(g.f_to_kind(out_kind)?)
}

fn row_vector(t: &Tensor, arg: &str, rows: usize) -> Result<Vec<f64>> {
    tensor::expect_ndim(t, arg, 1)?;
    let t = tensor::contiguous(&t.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?);
    let v = tensor::cpu_slice::<f64>(&t, arg)?.to_vec();
    if v.len() != rows {
        return Err(Error::shape(arg, format!("{rows} values"), v.len()));
    }
    Ok(v)
}

fn backward_cpu<T: Real>(
    spec: PolicyLoss,
    grad_out: f64,
    inp: &Inputs,
    coef: &[f64],
    seq: &[f64],
) -> Result<Tensor> {
    match spec.kind.code() {
        VANILLA => backward_rows::<T, VANILLA>(spec, grad_out, inp, coef, seq),
        GSPO => backward_rows::<T, GSPO>(spec, grad_out, inp, coef, seq),
        GPG => backward_rows::<T, GPG>(spec, grad_out, inp, coef, seq),
        _ => backward_rows::<T, CISPO>(spec, grad_out, inp, coef, seq),
    }
}

fn backward_rows<T: Real, const K: u8>(
    spec: PolicyLoss,
    grad_out: f64,
    inp: &Inputs,
    coef: &[f64],
    seq: &[f64],
) -> Result<Tensor> {
    let [old, lp, adv, m] = slices::<T>(inp)?;
    let cols = inp.batch.cols;
    let mut out = tensor::empty_cpu::<T>(&[inp.batch.rows as i64, cols as i64])?;
    let o = tensor::cpu_slice_mut::<T>(&mut out, "grad")?;
    parallel::install(|| {
        o.par_chunks_mut(cols).enumerate().for_each(|(i, orow)| {
            let range = i * cols..(i + 1) * cols;
            let (ol, l, a, w) = (
                &old[range.clone()],
                &lp[range.clone()],
                &adv[range.clone()],
                &m[range],
            );
            let cw = grad_out * coef[i];
            if cw == 0.0 {
                orow.fill(T::from_f64(0.0));
                return;
            }
            let (c, s) = (T::from_f64(cw), T::from_f64(seq[i]));
            backward_row::<T, K>(spec, orow, ol, l, a, w, c, s);
        })
    })?;
    Ok(out)
}

/// [`backward_row_body`] compiled for the widest vector extension the CPU has (see
/// [`forward_row`]).
#[allow(clippy::too_many_arguments)]
fn backward_row<T: Real, const K: u8>(
    spec: PolicyLoss,
    out: &mut [T],
    o: &[T],
    l: &[T],
    a: &[T],
    w: &[T],
    c: T,
    seq: T,
) {
    crate::simd::widest(
        #[inline(always)]
        || backward_row_body::<T, K>(spec, out, o, l, a, w, c, seq),
    )
}

/// One row of the gradient: `c * m * dL/dlog_prob`, 0 under mask 0.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_row_body<T: Real, const K: u8>(
    spec: PolicyLoss,
    out: &mut [T],
    o: &[T],
    l: &[T],
    a: &[T],
    w: &[T],
    c: T,
    seq: T,
) {
    let zero = T::from_f64(0.0);
    for ((((out, o), l), a), w) in out.iter_mut().zip(o).zip(l).zip(a).zip(w) {
        let g = spec.token_k::<T, K>(*o, *l, *a, seq).grad;
        *out = sel(*w != zero, c * *w * g, zero);
    }
}

/// verl's composition in tch ops; autograd flows through `lp` when it requires grad.
fn policy_loss_device(
    spec: PolicyLoss,
    old: &Tensor,
    lp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    batch: &Batch,
) -> Result<LossForward> {
    let k = batch.kind;
    let m = mask.f_to_kind(k)?;
    let keep = m.f_ne(0.0)?;
    // Masked positions are set to 0 before any arithmetic (`where` passes them no gradient), so
    // NaN or inf there reaches neither the loss nor the gradient, as on the CPU path.
    let clean =
        |t: &Tensor| -> Result<Tensor> { Ok(t.f_to_kind(k)?.f_where_scalarother(&keep, 0.0)?) };
    let (old, lp, adv) = (clean(old)?, clean(lp)?, clean(adv)?);
    let mmean = |x: &Tensor| -> Result<f64> {
        let s = x
            .f_to_kind(Kind::Double)?
            .f_where_scalarother(&keep, 0.0)?
            .f_mul(&m.f_to_kind(Kind::Double)?)?
            .f_sum(Kind::Double)?;
        let n = m.f_sum(Kind::Double)?.f_double_value(&[])?;
        Ok(round_to(k, s.f_double_value(&[])? / (n + MASK_EPS)))
    };
    let (lo, hi) = (1.0 - spec.clip_low, 1.0 + spec.clip_high);
    let raw = lp.f_sub(&old)?;
    let (losses, clipfrac, ppo_kl, lower) = match spec.kind {
        PolicyKind::Vanilla => {
            let d = raw.f_clamp(-20.0, 20.0)?;
            let r = d.f_exp()?;
            let l1 = adv.f_neg()?.f_mul(&r)?;
            let l2 = adv.f_neg()?.f_mul(&r.f_clamp(lo, hi)?)?;
            let lc = l1.f_maximum(&l2)?;
            let l3 = adv.f_neg()?.f_mul_scalar(spec.clip_c)?;
            let dual = l3.f_minimum(&lc)?;
            let neg = adv.f_lt(0.0)?;
            let losses = dual.f_where_self(&neg, &lc)?;
            let lower = lc.f_gt_tensor(&l3)?.f_logical_and(&neg)?;
            (
                losses,
                mmean(&l2.f_gt_tensor(&l1)?)?,
                mmean(&d.f_neg()?)?,
                mmean(&lower)?,
            )
        }
        PolicyKind::Gspo => {
            let counts = m.f_sum_dim_intlist(1, true, k)?.f_clamp_min(1.0)?;
            let seq = raw
                .f_detach()?
                .f_where_scalarother(&keep, 0.0)?
                .f_mul(&m)?
                .f_sum_dim_intlist(1, true, k)?
                .f_div(&counts)?;
            let log_r = lp.f_sub(&lp.f_detach()?)?.f_add(&seq)?.f_clamp_max(10.0)?;
            let r = log_r.f_exp()?;
            let l1 = adv.f_neg()?.f_mul(&r)?;
            let l2 = adv.f_neg()?.f_mul(&r.f_clamp(lo, hi)?)?;
            let losses = l1.f_maximum(&l2)?;
            (
                losses,
                mmean(&l2.f_gt_tensor(&l1)?)?,
                mmean(&raw.f_neg()?)?,
                0.0,
            )
        }
        PolicyKind::Gpg => (lp.f_neg()?.f_mul(&adv)?, 0.0, 0.0, 0.0),
        PolicyKind::Cispo => {
            let d = raw.f_clamp(-20.0, 20.0)?;
            let r = d.f_exp()?;
            let c = r.f_clamp(lo, hi)?;
            let losses = c.f_detach()?.f_neg()?.f_mul(&adv)?.f_mul(&lp)?;
            (
                losses,
                mmean(&r.f_ne_tensor(&c)?)?,
                mmean(&d.f_neg()?)?,
                0.0,
            )
        }
    };
    let loss = spec
        .agg
        .device(&losses, mask, k)?
        .f_to_kind(batch.out_kind)?;
    let empty = Tensor::f_zeros([0], (Kind::Double, tch::Device::Cpu))?;
    Ok(LossForward {
        loss,
        clipfrac,
        ppo_kl,
        clipfrac_lower: lower,
        row_coef: empty.shallow_clone(),
        row_seq: empty,
    })
}

/// verl's `agg_loss(loss_mat, mask, mode)`: the CPU path returns the value and the `[B]` row
/// coefficients (the gradient is `grad * c_i * m`); the device path records autograd.
pub fn agg_loss(
    loss: &Tensor,
    mask: &Tensor,
    mode: AggMode,
    path: TensorPath,
) -> Result<(Tensor, Tensor)> {
    let batch = float_batch(loss, "loss_mat")?;
    expect_same_shape(mask, "loss_mask", loss, "loss_mat")?;
    if path.resolve(batch.device)? != TensorPath::Cpu {
        let out = mode.device(&loss.f_to_kind(batch.kind)?, mask, batch.kind)?;
        let empty = Tensor::f_zeros([0], (Kind::Double, tch::Device::Cpu))?;
        return Ok((out.f_to_kind(batch.out_kind)?, empty));
    }
    let l = compute_view(&loss.f_detach()?, batch.kind)?;
    let m = compute_view(mask, batch.kind)?;
    let (value, coef) = if batch.kind == Kind::Double {
        agg_cpu::<f64>(&l, &m, mode, &batch)?
    } else {
        agg_cpu::<f32>(&l, &m, mode, &batch)?
    };
    let value = Tensor::f_from_slice(&[value])?
        .f_reshape([])?
        .f_to_kind(batch.out_kind)?;
    Ok((value, Tensor::f_from_slice(&coef)?))
}

fn agg_cpu<T: Real>(l: &Tensor, m: &Tensor, mode: AggMode, b: &Batch) -> Result<(f64, Vec<f64>)> {
    let ls = tensor::cpu_slice::<T>(l, "loss_mat")?;
    let ms = tensor::cpu_slice::<T>(m, "loss_mask")?;
    let cols = b.cols.max(1);
    let rows = ls.len() / cols;
    // Rows in work items of about 16k elements (`map_indices` keeps row order).
    let sums: Vec<(f64, f64)> = parallel::map_indices(rows, (16_384 / cols).max(1), &|i| {
        let r = i * cols..(i + 1) * cols;
        super::masked::masked_sums::<T, 1>(&ls[r.clone()], &ms[r], 0.0)
    })?;
    let n: Vec<f64> = sums.iter().map(|s| s.1).collect();
    let coef = mode.row_coefficients(&n, b.cols);
    let mut value = 0.0;
    for ((s, _), &c) in sums.iter().zip(&coef) {
        if c != 0.0 {
            value += c * s;
        }
    }
    let total: f64 = n.iter().sum();
    let n_seq = n.iter().filter(|&&v| v > 0.0).count();
    if (mode == AggMode::TokenMean && total == 0.0)
        || (mode != AggMode::TokenMean && mode != AggMode::TokenSum && n_seq == 0)
    {
        value = f64::NAN; // 0 / 0, as verl
    }
    Ok((value, coef))
}

/// Gradient of an aggregated loss with respect to `loss_mat`: `grad_out * c_i * m[i, t]`.
pub fn agg_loss_backward(
    grad_out: f64,
    loss: &Tensor,
    mask: &Tensor,
    row_coef: &Tensor,
) -> Result<Tensor> {
    let batch = float_batch(loss, "loss_mat")?;
    expect_same_shape(mask, "loss_mask", loss, "loss_mat")?;
    let coef = row_vector(row_coef, "row_coef", batch.rows)?;
    let m = compute_view(mask, batch.kind)?;
    let shape = [batch.rows as i64, batch.cols as i64];
    let out = if batch.kind == Kind::Double {
        agg_grad_cpu::<f64>(grad_out, &m, &coef, &shape, batch.cols)?
    } else {
        agg_grad_cpu::<f32>(grad_out, &m, &coef, &shape, batch.cols)?
    };
    Ok(out.f_to_kind(batch.out_kind)?)
}

fn agg_grad_cpu<T: Real>(
    g: f64,
    m: &Tensor,
    coef: &[f64],
    shape: &[i64],
    cols: usize,
) -> Result<Tensor> {
    let ms = tensor::cpu_slice::<T>(m, "loss_mask")?;
    let mut out = tensor::empty_cpu::<T>(shape)?;
    let o = tensor::cpu_slice_mut::<T>(&mut out, "grad")?;
    let cols = cols.max(1);
    let per = (16_384 / cols).max(1);
    parallel::for_each_chunk_mut(o, per * cols, &|k, chunk| {
        for (j, orow) in chunk.chunks_mut(cols).enumerate() {
            let i = k * per + j;
            let (c, mrow) = (coef[i], &ms[i * cols..(i + 1) * cols]);
            // g * c * w is (g * c) * w: the row factor once, then one product per element.
            let gc = g * c;
            for (ov, &mv) in orow.iter_mut().zip(mrow) {
                let w = mv.to_f64();
                *ov = T::from_f64(if w == 0.0 || c == 0.0 { 0.0 } else { gc * w });
            }
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanilla_token_hand_worked() {
        let spec = PolicyLoss::new(PolicyKind::Vanilla, 0.2, 0.2, 3.0, AggMode::TokenMean).unwrap();
        // r = e^0.5 = 1.6487 > 1.2, A = 1: L1 = -1.6487, L2 = -1.2 -> loss -1.2, no gradient.
        let t = spec.token(0.0f64, 0.5, 1.0, 0.0);
        assert!((t.loss + 1.2).abs() < 1e-12 && t.grad == 0.0 && t.clipped);
        // A = -1, r = e^2 = 7.39: L1 = 7.39 > L2 = 1.2; dual clip min(3, 7.39) = 3.
        let t = spec.token(0.0f64, 2.0, -1.0, 0.0);
        assert!((t.loss - 3.0).abs() < 1e-12 && t.grad == 0.0 && t.lower);
        // Inside the clip range both branches tie: the gradient is -A r.
        let t = spec.token(0.0f64, 0.1, 2.0, 0.0);
        assert!((t.grad + 2.0 * 0.1f64.exp()).abs() < 1e-12 && !t.clipped);
    }

    use crate::simd::{at_width, Width};

    fn sums_bits(s: &RowSums) -> [u64; 6] {
        [s.loss, s.n, s.clipped, s.lower, s.neg_kl, s.seq].map(f64::to_bits)
    }

    /// The AVX2 copies of the row kernels (chosen at run time) give the bits of the baseline
    /// copies, for every kind, on rows with clipped ratios, both advantage signs, NaN and inf
    /// under mask 0, fractional mask weights and lengths around the chunk size.
    #[test]
    fn row_kernel_copies_agree_bit_for_bit() {
        fn check<const K: u8>(spec: PolicyLoss, o: &[f32], l: &[f32], a: &[f32], w: &[f32]) {
            let fast = forward_row::<f32, K>(spec, o, l, a, w);
            let base = forward_row_body::<f32, K>(spec, o, l, a, w);
            assert_eq!(
                sums_bits(&fast),
                sums_bits(&base),
                "kind {K} len {}",
                o.len()
            );
            for width in [Width::Avx2, Width::Avx512] {
                if width.supported() {
                    let s = at_width(width, || forward_row_body::<f32, K>(spec, o, l, a, w));
                    assert_eq!(sums_bits(&s), sums_bits(&base), "{width:?} kind {K}");
                }
            }
            let (c, seq) = (0.37f32, fast.seq as f32);
            let (mut g1, mut g2) = (vec![0.0f32; o.len()], vec![0.0f32; o.len()]);
            backward_row::<f32, K>(spec, &mut g1, o, l, a, w, c, seq);
            backward_row_body::<f32, K>(spec, &mut g2, o, l, a, w, c, seq);
            assert_eq!(
                g1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                g2.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "kind {K} len {}",
                o.len()
            );
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        for len in [0usize, 1, 7, 8, 9, 255, 256, 257, 600] {
            let o: Vec<f32> = (0..len).map(|_| -3.0 * next()).collect();
            let l: Vec<f32> = o.iter().map(|&v| v + (next() - 0.5) * 2.0).collect();
            let a: Vec<f32> = (0..len).map(|_| (next() - 0.5) * 4.0).collect();
            let mut w: Vec<f32> = (0..len)
                .map(|_| [0.0, 1.0, 1.0, 0.5][(next() * 4.0) as usize % 4])
                .collect();
            let mut l = l;
            for k in (0..len).step_by(11) {
                w[k] = 0.0;
                l[k] = if k % 2 == 0 { f32::NAN } else { f32::INFINITY };
            }
            for kind in [
                PolicyKind::Vanilla,
                PolicyKind::Gspo,
                PolicyKind::Gpg,
                PolicyKind::Cispo,
            ] {
                let spec = PolicyLoss::new(kind, 0.2, 0.28, 3.0, AggMode::TokenMean).unwrap();
                match kind {
                    PolicyKind::Vanilla => check::<VANILLA>(spec, &o, &l, &a, &w),
                    PolicyKind::Gspo => check::<GSPO>(spec, &o, &l, &a, &w),
                    PolicyKind::Gpg => check::<GPG>(spec, &o, &l, &a, &w),
                    PolicyKind::Cispo => check::<CISPO>(spec, &o, &l, &a, &w),
                }
            }
        }
    }

    #[test]
    fn agg_coefficients() {
        let n = [2.0, 0.0, 4.0];
        let c = AggMode::TokenMean.row_coefficients(&n, 5);
        assert_eq!(c, vec![1.0 / 6.0; 3]);
        let c = AggMode::SeqMeanTokenMean.row_coefficients(&n, 5);
        assert!((c[0] - 1.0 / (2.0 * (2.0 + 1e-8))).abs() < 1e-15 && c[1] == 0.0);
        let c = AggMode::SeqMeanTokenSumNorm {
            loss_scale_factor: None,
        }
        .row_coefficients(&n, 5);
        assert_eq!(c[2], 1.0 / 10.0);
        assert!(matches!(AggMode::parse("mean", None), Err(Error::Value(_))));
    }
}
