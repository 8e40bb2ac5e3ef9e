//! KL penalties between the policy and a reference policy, per token.
//!
//! `d = log_prob - ref_log_prob`. k1/"kl": `d`; "abs": `|d|`; k2/"mse": `d^2 / 2`;
//! k3/"low_var_kl": `x = clamp(-d, -20, 20)`, `clamp(exp(x) - x - 1, -10, 10)`. A `+` suffix keeps
//! the value of the base estimator with the gradient of k2 (straight-through). Gradients are the
//! ones torch's autograd gives for verl's composition (clamp passes the gradient on its closed
//! interval, `abs` has gradient `sign(d)`).

use tch::{Kind, Tensor};

use super::masked::MASK_EPS;
use super::{
    compute_view, expect_same_shape, float_batch, float_pair, map2_cpu, map3_cpu, round_to, Real,
};
use crate::error::{Error, Result};
use crate::parallel;
use crate::tensor::{self, TensorPath};

/// The valid names, for error messages.
pub const KL_KINDS: &str =
    "one of 'kl', 'k1', 'abs', 'mse', 'k2', 'low_var_kl', 'k3', each optionally with a '+' suffix";

/// The value part of a KL estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlBase {
    /// `d`.
    K1,
    /// `|d|`.
    Abs,
    /// `d^2 / 2`.
    K2,
    /// `exp(-d) + d - 1`, clamped as verl does.
    K3,
}

/// A KL estimator: its value and whether its gradient is k2's (`+` suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KlKind {
    pub base: KlBase,
    pub straight_through: bool,
}

impl KlKind {
    /// Parses verl's names (`"low_var_kl"`, `"k3+"`, ...); `"k2+"` is plain k2.
    pub fn parse(name: &str) -> Result<Self> {
        let (base_name, plus) = match name.strip_suffix('+') {
            Some(b) => (b, true),
            None => (name, false),
        };
        let base = match base_name {
            "kl" | "k1" => KlBase::K1,
            "abs" => KlBase::Abs,
            "mse" | "k2" => KlBase::K2,
            "low_var_kl" | "k3" => KlBase::K3,
            _ => return Err(Error::value("kind", KL_KINDS, format!("{name:?}"))),
        };
        Ok(Self {
            base,
            straight_through: plus && base != KlBase::K2,
        })
    }

    /// The estimator's value at `d = log_prob - ref_log_prob`.
    #[inline]
    pub fn value<T: Real>(self, d: T) -> T {
        match self.base {
            KlBase::K1 => value::<T, K1>(d),
            KlBase::Abs => value::<T, ABS>(d),
            KlBase::K2 => value::<T, K2>(d),
            KlBase::K3 => value::<T, K3>(d),
        }
    }

    /// The derivative of the estimator with respect to `log_prob` at `d` (autograd's choice at
    /// the clamp boundaries and at `|d|`'s kink).
    #[inline]
    pub fn grad<T: Real>(self, d: T) -> T {
        match (self.base, self.straight_through) {
            (_, true) | (KlBase::K2, _) => d,
            (KlBase::K1, _) => grad::<T, K1>(d),
            (KlBase::Abs, _) => grad::<T, ABS>(d),
            (KlBase::K3, _) => grad::<T, K3>(d),
        }
    }

    fn code(self) -> u8 {
        match self.base {
            KlBase::K1 => K1,
            KlBase::Abs => ABS,
            KlBase::K2 => K2,
            KlBase::K3 => K3,
        }
    }
}

// The base estimators as const-generic codes, so every kernel is compiled (and vectorised) for
// one estimator with no branch on it in the loop.
const K1: u8 = 0;
const ABS: u8 = 1;
const K2: u8 = 2;
const K3: u8 = 3;

#[inline(always)]
fn value<T: Real, const BASE: u8>(d: T) -> T {
    let c = |v: f64| T::from_f64(v);
    match BASE {
        K1 => d,
        ABS => d.abs(),
        K2 => c(0.5) * (d * d),
        _ => {
            // verl: kl = ref - lp; clamp(kl, -20, 20); clamp(exp(kl) - kl - 1, -10, 10).
            let x = (-d).clamp_to(c(-20.0), c(20.0));
            (x.exp_bounded() - x - T::ONE).clamp_to(c(-10.0), c(10.0))
        }
    }
}

#[inline(always)]
fn grad<T: Real, const BASE: u8>(d: T) -> T {
    let c = |v: f64| T::from_f64(v);
    match BASE {
        K1 => T::ONE,
        ABS => {
            if d > c(0.0) {
                T::ONE
            } else if d < c(0.0) {
                -T::ONE
            } else {
                d // 0, or NaN
            }
        }
        K2 => d,
        _ => {
            let kl = -d;
            let x = kl.clamp_to(c(-20.0), c(20.0));
            let e = x.exp_bounded();
            let kld = e - x - T::ONE;
            let pass = kl >= c(-20.0) && kl <= c(20.0) && kld >= c(-10.0) && kld <= c(10.0);
            if pass {
                T::ONE - e
            } else if kl.is_nan() {
                kl
            } else {
                c(0.0)
            }
        }
    }
}

fn value_cpu<T: Real>(a: &[T], b: &[T], shape: &[i64], kind: KlKind) -> Result<Tensor> {
    match kind.code() {
        K1 => map2_cpu(a, b, shape, |lp, r| value::<T, K1>(lp - r)),
        ABS => map2_cpu(a, b, shape, |lp, r| value::<T, ABS>(lp - r)),
        K2 => map2_cpu(a, b, shape, |lp, r| value::<T, K2>(lp - r)),
        _ => map2_cpu(a, b, shape, |lp, r| value::<T, K3>(lp - r)),
    }
}

fn grad_cpu<T: Real>(g: &[T], a: &[T], b: &[T], shape: &[i64], kind: KlKind) -> Result<Tensor> {
    let code = if kind.straight_through {
        K2
    } else {
        kind.code()
    };
    match code {
        K1 => map3_cpu(g, a, b, shape, |g, _, _| g),
        ABS => map3_cpu(g, a, b, shape, |g, lp, r| g * grad::<T, ABS>(lp - r)),
        K2 => map3_cpu(g, a, b, shape, |g, lp, r| g * (lp - r)),
        _ => map3_cpu(g, a, b, shape, |g, lp, r| g * grad::<T, K3>(lp - r)),
    }
}

/// Per-token KL estimate, same shape as the inputs (any shape), in their dtype.
///
/// The CPU path is one fused pass; the device path composes tch ops exactly as verl does, so
/// libtorch's autograd records it when an input requires grad.
pub fn kl_penalty(
    log_prob: &Tensor,
    ref_log_prob: &Tensor,
    kind: KlKind,
    path: TensorPath,
) -> Result<Tensor> {
    let (compute, out_kind) = float_pair(log_prob, "log_prob", ref_log_prob, "ref_log_prob")?;
    match path.resolve(log_prob.device())? {
        TensorPath::Cpu => {
            let a = compute_view(log_prob, compute)?;
            let b = compute_view(ref_log_prob, compute)?;
            let shape = log_prob.size();
            let out = if compute == Kind::Double {
                value_cpu::<f64>(slice(&a)?, slice(&b)?, &shape, kind)?
            } else {
                value_cpu::<f32>(slice(&a)?, slice(&b)?, &shape, kind)?
            };
            Ok(out.f_to_kind(out_kind)?)
        }
        _ => kl_device(log_prob, ref_log_prob, kind),
    }
}

fn slice<T: Real>(t: &Tensor) -> Result<&[T]> {
    tensor::cpu_slice::<T>(t, "log_prob")
}

/// verl's composition in tch ops (differentiable through libtorch's autograd).
fn kl_device(lp: &Tensor, r: &Tensor, kind: KlKind) -> Result<Tensor> {
    let d = lp.f_sub(r)?;
    let value = match kind.base {
        KlBase::K1 => d.shallow_clone(),
        KlBase::Abs => d.f_abs()?,
        KlBase::K2 => d.f_square()?.f_mul_scalar(0.5)?,
        KlBase::K3 => {
            let kl = r.f_sub(lp)?.f_clamp(-20.0, 20.0)?;
            kl.f_exp()?
                .f_sub(&kl)?
                .f_sub_scalar(1.0)?
                .f_clamp(-10.0, 10.0)?
        }
    };
    if !kind.straight_through {
        return Ok(value);
    }
    let k2 = d.f_square()?.f_mul_scalar(0.5)?;
    Ok(k2.f_sub(&k2.f_detach()?)?.f_add(&value.f_detach()?)?)
}

/// Gradient of `sum(grad_out * kl_penalty(log_prob, ref))` with respect to `log_prob` (the
/// gradient with respect to `ref_log_prob` is its negative). Used by the CPU autograd function.
pub fn kl_penalty_backward(
    grad_out: &Tensor,
    log_prob: &Tensor,
    ref_log_prob: &Tensor,
    kind: KlKind,
    path: TensorPath,
) -> Result<Tensor> {
    let (compute, out_kind) = float_pair(log_prob, "log_prob", ref_log_prob, "ref_log_prob")?;
    float_pair(log_prob, "log_prob", grad_out, "grad_output")?;
    match path.resolve(log_prob.device())? {
        TensorPath::Cpu => {
            let g = compute_view(grad_out, compute)?;
            let a = compute_view(log_prob, compute)?;
            let b = compute_view(ref_log_prob, compute)?;
            let shape = log_prob.size();
            let out = if compute == Kind::Double {
                grad_cpu::<f64>(slice(&g)?, slice(&a)?, slice(&b)?, &shape, kind)?
            } else {
                grad_cpu::<f32>(slice(&g)?, slice(&a)?, slice(&b)?, &shape, kind)?
            };
            Ok(out.f_to_kind(out_kind)?)
        }
        _ => {
            let lp = log_prob.f_detach()?.f_to_kind(compute)?;
            let r = ref_log_prob.f_detach()?.f_to_kind(compute)?;
            let d = lp.f_sub(&r)?;
            let local = if kind.straight_through {
                d
            } else {
                match kind.base {
                    KlBase::K1 => d.f_ones_like()?,
                    KlBase::Abs => d.f_sgn()?,
                    KlBase::K2 => d,
                    KlBase::K3 => {
                        let kl = r.f_sub(&lp)?;
                        let x = kl.f_clamp(-20.0, 20.0)?;
                        let e = x.f_exp()?;
                        let kld = e.f_sub(&x)?.f_sub_scalar(1.0)?;
                        let pass = kl
                            .f_ge(-20.0)?
                            .f_logical_and(&kl.f_le(20.0)?)?
                            .f_logical_and(&kld.f_ge(-10.0)?)?
                            .f_logical_and(&kld.f_le(10.0)?)?;
                        e.f_sub_scalar(1.0)?
                            .f_neg()?
                            .f_where_scalarother(&pass, 0.0)?
                    }
                }
            };
            Ok(grad_out
                .f_to_kind(compute)?
                .f_mul(&local)?
                .f_to_kind(out_kind)?)
        }
    }
}

/// verl's `apply_kl_penalty`: `token_level_rewards = scores - beta * kl(old, ref) * mask` and the
/// current KL (mean over rows of the masked per-row mean of `kl * mask`).
///
/// Positions under mask 0 keep their score even where the log-probs are NaN or inf.
pub fn apply_kl_penalty(
    scores: &Tensor,
    old_log_prob: &Tensor,
    ref_log_prob: &Tensor,
    mask: &Tensor,
    kind: KlKind,
    beta: f64,
    path: TensorPath,
) -> Result<(Tensor, f64)> {
    let batch = float_batch(scores, "token_level_scores")?;
    expect_same_shape(old_log_prob, "old_log_prob", scores, "token_level_scores")?;
    expect_same_shape(ref_log_prob, "ref_log_prob", scores, "token_level_scores")?;
    expect_same_shape(mask, "response_mask", scores, "token_level_scores")?;
    float_pair(old_log_prob, "old_log_prob", ref_log_prob, "ref_log_prob")?;
    if !beta.is_finite() {
        return Err(Error::value("beta", "a finite KL coefficient", beta));
    }
    if batch.rows == 0 {
        return Err(Error::shape(
            "token_level_scores",
            "a non-empty batch",
            "0 rows",
        ));
    }
    match path.resolve(batch.device)? {
        TensorPath::Cpu => {
            let views = [scores, old_log_prob, ref_log_prob, mask]
                .iter()
                .map(|t| compute_view(t, batch.kind))
                .collect::<Result<Vec<_>>>()?;
            let (out, kl) = if batch.kind == Kind::Double {
                apply_cpu::<f64>(&views, kind, beta, batch.cols)?
            } else {
                apply_cpu::<f32>(&views, kind, beta, batch.cols)?
            };
            Ok((out.f_to_kind(batch.out_kind)?, round_to(batch.kind, kl)))
        }
        _ => {
            let k = batch.kind;
            let kld = kl_device(
                &old_log_prob.f_to_kind(k)?,
                &ref_log_prob.f_to_kind(k)?,
                kind,
            )?;
            let m = mask.f_to_kind(k)?;
            let keep = m.f_ne(0.0)?;
            let kld = kld.f_mul(&m)?.f_where_scalarother(&keep, 0.0)?;
            let rewards = scores.f_to_kind(k)?.f_sub(&kld.f_mul_scalar(beta)?)?;
            let per_row = kld.f_sum_dim_intlist(1, false, Kind::Double)?.f_div(
                &m.f_sum_dim_intlist(1, false, Kind::Double)?
                    .f_add_scalar(MASK_EPS)?,
            )?;
            let current = round_to(k, per_row.f_mean(Kind::Double)?.f_double_value(&[])?);
            Ok((rewards.f_to_kind(batch.out_kind)?, current))
        }
    }
}

fn apply_cpu<T: Real>(
    views: &[Tensor],
    kind: KlKind,
    beta: f64,
    cols: usize,
) -> Result<(Tensor, f64)> {
    use rayon::prelude::*;
    let s = tensor::cpu_slice::<T>(&views[0], "token_level_scores")?;
    let old = tensor::cpu_slice::<T>(&views[1], "old_log_prob")?;
    let r = tensor::cpu_slice::<T>(&views[2], "ref_log_prob")?;
    let m = tensor::cpu_slice::<T>(&views[3], "response_mask")?;
    let rows = s.len() / cols;
    let mut out = tensor::empty_cpu::<T>(&[rows as i64, cols as i64])?;
    let o = tensor::cpu_slice_mut::<T>(&mut out, "token_level_rewards")?;
    let per_row: Vec<f64> = parallel::install(|| {
        o.par_chunks_mut(cols)
            .enumerate()
            .map(|(i, orow)| {
                let base = i * cols;
                let (mut sum, mut n) = (0.0, 0.0);
                for (t, ov) in orow.iter_mut().enumerate() {
                    let k = base + t;
                    let w = m[k].to_f64();
                    let score = s[k].to_f64();
                    if w == 0.0 {
                        *ov = s[k];
                        continue;
                    }
                    // In T, as verl's `kl * mask` and `scores - beta * kld` tensors.
                    let kld = (kind.value(old[k] - r[k]) * m[k]).to_f64();
                    *ov = T::from_f64(score - T::from_f64(beta * kld).to_f64());
                    sum += kld * w;
                    n += w;
                }
                sum / (n + MASK_EPS)
            })
            .collect()
    })?;
    let current = per_row.iter().sum::<f64>() / rows as f64;
    Ok((out, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_hand_worked() {
        let k3 = KlKind::parse("low_var_kl").unwrap();
        // d = -1: x = 1, e - 1 - 1 = 0.71828...
        assert!((k3.value(-1.0f64) - (std::f64::consts::E - 2.0)).abs() < 1e-12);
        assert_eq!(k3.value(-100.0f64), 10.0); // exp(20) - 21 clamped to 10
        assert_eq!(KlKind::parse("mse").unwrap().value(3.0f64), 4.5);
        assert_eq!(KlKind::parse("abs").unwrap().value(-2.0f64), 2.0);
        assert!(KlKind::parse("k2+").unwrap() == KlKind::parse("k2").unwrap());
        assert!(KlKind::parse("k3+").unwrap().straight_through);
        assert!(matches!(KlKind::parse("k4"), Err(Error::Value(_))));
    }

    #[test]
    fn k3_gradient_matches_finite_difference() {
        let k3 = KlKind::parse("k3").unwrap();
        for d in [-2.0f64, -0.3, 0.0, 0.7, 1.5] {
            let h = 1e-6;
            let fd = (k3.value(d + h) - k3.value(d - h)) / (2.0 * h);
            assert!(
                (fd - k3.grad(d)).abs() < 1e-6,
                "{d}: {fd} vs {}",
                k3.grad(d)
            );
        }
        assert_eq!(k3.grad(-30.0f64), 0.0); // clamped
    }
}
