//! Masked statistics over a whole `[B, T]` batch: mean, unbiased variance, whitening.
//!
//! Positions where the mask is 0 never contribute, even when they hold NaN or inf.

use rayon::prelude::*;
use tch::{Kind, Tensor};

use super::{compute_view, expect_same_shape, float_batch, Real};
use crate::error::{Error, Result};
use crate::parallel;
use crate::tensor::{self, TensorPath};

/// The `+ 1e-8` of verl's masked mean and whitening.
pub const MASK_EPS: f64 = 1e-8;

/// Mean, unbiased variance and weight of `x` over `m` (CPU, f64, row-order reduction).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskedStats {
    /// sum(x*m) / (sum(m) + 1e-8).
    pub mean: f64,
    /// Unbiased variance: mean((x-mu)^2 over m) * n/(n-1).
    pub var: f64,
    /// n = sum(m).
    pub count: f64,
}

/// Statistics of a row-major `[rows, cols]` slice pair; errors when sum(m) <= 1.
pub fn stats_cpu<T: Real>(x: &[T], m: &[T], cols: usize, arg: &str) -> Result<MaskedStats> {
    let cols = cols.max(1);
    let row_sums: Vec<(f64, f64)> = parallel::install(|| {
        x.par_chunks(cols)
            .zip(m.par_chunks(cols))
            .map(|(xr, mr)| {
                let (mut s, mut n) = (0.0, 0.0);
                for (&xv, &mv) in xr.iter().zip(mr) {
                    let w = mv.to_f64();
                    if w != 0.0 {
                        s += xv.to_f64() * w;
                        n += w;
                    }
                }
                (s, n)
            })
            .collect()
    })?;
    let (sum, count) = row_sums
        .iter()
        .fold((0.0, 0.0), |(a, b), (s, n)| (a + s, b + n));
    if count <= 1.0 {
        return Err(Error::value(
            arg,
            "a mask with more than one selected element (the variance is unbiased)",
            format!("sum(mask) = {count}"),
        ));
    }
    let mean = sum / (count + MASK_EPS);
    let row_sq: Vec<f64> = parallel::install(|| {
        x.par_chunks(cols)
            .zip(m.par_chunks(cols))
            .map(|(xr, mr)| {
                let mut s = 0.0;
                for (&xv, &mv) in xr.iter().zip(mr) {
                    let w = mv.to_f64();
                    if w != 0.0 {
                        let d = xv.to_f64() - mean;
                        s += d * d * w;
                    }
                }
                s
            })
            .collect()
    })?;
    let sq: f64 = row_sq.iter().sum();
    let var = sq / (count + MASK_EPS) * count / (count - 1.0);
    Ok(MaskedStats { mean, var, count })
}

/// Whitens `x` in place with `stats`: `(x - mean) / sqrt(var + 1e-8)` at every position.
pub fn whiten_in_place<T: Real>(x: &mut [T], stats: MaskedStats) -> Result<()> {
    let scale = 1.0 / (stats.var + MASK_EPS).sqrt();
    parallel::install(|| {
        x.par_chunks_mut(1 << 14).for_each(|chunk| {
            for v in chunk {
                *v = T::from_f64((v.to_f64() - stats.mean) * scale);
            }
        })
    })
}

/// The mask as a 0/1 tensor of `kind` with masked-out positions selected away from `x`.
fn masked_product(x: &Tensor, mask: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
    let m = mask.f_to_kind(kind)?;
    let keep = m.f_ne(0.0)?;
    let xm = x.f_mul(&m)?.f_where_scalarother(&keep, 0.0)?;
    Ok((xm, m))
}

/// Device-path statistics: mean, unbiased variance (0-d tensors in `kind`) and the count.
pub fn stats_device(x: &Tensor, mask: &Tensor, kind: Kind, arg: &str) -> Result<(Tensor, Tensor)> {
    let x = x.f_to_kind(kind)?;
    let (xm, m) = masked_product(&x, mask, kind)?;
    let count = m.f_sum(kind)?;
    let n = count.f_double_value(&[])?;
    if n <= 1.0 {
        return Err(Error::value(
            arg,
            "a mask with more than one selected element (the variance is unbiased)",
            format!("sum(mask) = {n}"),
        ));
    }
    let mean = xm.f_sum(kind)?.f_div(&count.f_add_scalar(MASK_EPS)?)?;
    let centered = x.f_sub(&mean)?;
    let (sq, _) = masked_product(&centered.f_square()?, mask, kind)?;
    let var = sq
        .f_sum(kind)?
        .f_div(&count.f_add_scalar(MASK_EPS)?)?
        .f_mul_scalar(n / (n - 1.0))?;
    Ok((mean, var))
}

fn check_pair(x: &Tensor, mask: &Tensor) -> Result<()> {
    if x.size() != mask.size() {
        return Err(Error::shape(
            "mask",
            format!("the shape of `values` {}", tensor::shape_name(x)),
            tensor::shape_name(mask),
        ));
    }
    tensor::expect_device(mask, "mask", x.device())
}

/// verl's `masked_mean` over all elements: sum(x*m) / (sum(m) + 1e-8), as a 0-d tensor.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    check_pair(x, mask)?;
    let kind = float_kind(x)?;
    let (xm, m) = masked_product(&x.f_to_kind(kind)?, mask, kind)?;
    let out = xm
        .f_sum(kind)?
        .f_div(&m.f_sum(kind)?.f_add_scalar(MASK_EPS)?)?;
    Ok(out.f_to_kind(tensor::kind_of(x, "values")?)?)
}

/// verl's unbiased `masked_var` as a 0-d tensor; errors when sum(mask) <= 1.
pub fn masked_var(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    check_pair(x, mask)?;
    let kind = float_kind(x)?;
    let (_, var) = stats_device(x, mask, kind, "mask")?;
    Ok(var.f_to_kind(tensor::kind_of(x, "values")?)?)
}

fn float_kind(x: &Tensor) -> Result<Kind> {
    match tensor::kind_of(x, "values")? {
        Kind::Double => Ok(Kind::Double),
        Kind::Float | Kind::Half | Kind::BFloat16 => Ok(Kind::Float),
        other => Err(Error::dtype(
            "values",
            "a floating-point tensor",
            tensor::kind_name(other),
        )),
    }
}

/// verl's `masked_whiten`: `(x - mean) * rsqrt(var + 1e-8)` with statistics over the mask,
/// applied to every position. `x` and `mask` are `[B, T]`.
pub fn masked_whiten(x: &Tensor, mask: &Tensor, path: TensorPath) -> Result<Tensor> {
    let batch = float_batch(x, "values")?;
    expect_same_shape(mask, "mask", x, "values")?;
    match path.resolve(batch.device)? {
        TensorPath::Cpu => {
            let xs = compute_view(x, batch.kind)?;
            let ms = compute_view(mask, batch.kind)?;
            let mut out = tensor::fresh_copy(&xs)?;
            if batch.kind == Kind::Double {
                whiten_cpu::<f64>(&xs, &ms, &mut out, batch.cols)?;
            } else {
                whiten_cpu::<f32>(&xs, &ms, &mut out, batch.cols)?;
            }
            Ok(out.f_to_kind(batch.out_kind)?)
        }
        _ => {
            let (mean, var) = stats_device(x, mask, batch.kind, "mask")?;
            let out = x
                .f_to_kind(batch.kind)?
                .f_sub(&mean)?
                .f_mul(&var.f_add_scalar(MASK_EPS)?.f_rsqrt()?)?;
            Ok(out.f_to_kind(batch.out_kind)?)
        }
    }
}

fn whiten_cpu<T: Real>(xs: &Tensor, ms: &Tensor, out: &mut Tensor, cols: usize) -> Result<()> {
    let stats = stats_cpu(
        tensor::cpu_slice::<T>(xs, "values")?,
        tensor::cpu_slice::<T>(ms, "mask")?,
        cols,
        "mask",
    )?;
    whiten_in_place(tensor::cpu_slice_mut::<T>(out, "out")?, stats)
}
