//! Masked statistics over a whole `[B, T]` batch: mean, unbiased variance, whitening.
//!
//! Positions where the mask is 0 never contribute, even when they hold NaN or inf.

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

/// Elements per work item of the whole-tensor reductions. The partial sums are folded in item
/// order, so results depend on the number of elements alone, never on shapes or threads.
const BLOCK: usize = 1 << 14;

/// Accumulator lanes of the masked sums (element `k` of a slice goes to lane `k % LANES`).
const LANES: usize = 8;

#[inline(always)]
fn fold(l: &[f64; LANES]) -> f64 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// `(sum of (x - center) ^ POW * m over m != 0, sum of m)` in f64, for POW 1 (with `center`
/// 0) or 2. Positions with `m == 0` add exactly nothing, even when `x` is NaN or inf. Lanes
/// keep the loop free of one long chain of additions and let it vectorise (a select, no
/// branch); they are folded in a fixed order.
#[inline(always)]
fn masked_sums_body<T: Real, const POW: u8>(x: &[T], m: &[T], center: f64) -> (f64, f64) {
    let (mut s, mut n) = ([0.0f64; LANES], [0.0f64; LANES]);
    let term = |xv: T, w: f64| masked_term::<POW>(xv.to_f64(), w, center);
    let (mut xc, mut mc) = (x.chunks_exact(LANES), m.chunks_exact(LANES));
    for (xa, ma) in (&mut xc).zip(&mut mc) {
        for l in 0..LANES {
            let w = ma[l].to_f64();
            s[l] += term(xa[l], w);
            n[l] += w;
        }
    }
    for (l, (&xv, &mv)) in xc.remainder().iter().zip(mc.remainder()).enumerate() {
        let w = mv.to_f64();
        s[l] += term(xv, w);
        n[l] += w;
    }
    (fold(&s), fold(&n))
}

/// [`masked_sums_body`], compiled for AVX2 where the CPU has it (the same bits:
/// [`crate::simd::at_width`]).
pub(crate) fn masked_sums_generic<T: Real, const POW: u8>(
    x: &[T],
    m: &[T],
    center: f64,
) -> (f64, f64) {
    crate::simd::at_width(
        crate::simd::Width::Avx2,
        #[inline(always)]
        || masked_sums_body::<T, POW>(x, m, center),
    )
}

/// [`masked_sums_body`] for f32 written with AVX intrinsics (the compiler's own vectorisation
/// of the lane loop shuffles and spills): lanes 0-3 and 4-7 are two f64 vectors, and every
/// lane sees the same operations in the same order as the portable body, so the bits agree.
pub(crate) fn masked_sums_f32<const POW: u8>(x: &[f32], m: &[f32], center: f64) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx512f() {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { masked_sums_f32_avx512::<POW>(x, m, center) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        // SAFETY: the CPU supports AVX2 (and so AVX), checked just above.
        return unsafe { masked_sums_f32_avx::<POW>(x, m, center) };
    }
    masked_sums_generic::<f32, POW>(x, m, center)
}

/// See [`masked_sums_f32`].
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn masked_sums_f32_avx<const POW: u8>(x: &[f32], m: &[f32], center: f64) -> (f64, f64) {
    use std::arch::x86_64::{
        __m256d, _mm256_add_pd, _mm256_and_pd, _mm256_castps256_ps128, _mm256_cmp_pd,
        _mm256_cvtps_pd, _mm256_extractf128_ps, _mm256_loadu_ps, _mm256_mul_pd, _mm256_set1_pd,
        _mm256_setzero_pd, _mm256_storeu_pd, _mm256_sub_pd, _CMP_NEQ_UQ,
    };
    let n = x.len().min(m.len());
    let body = n / LANES * LANES;
    let (mut s, mut w) = ([0.0f64; LANES], [0.0f64; LANES]);
    // SAFETY: every load reads 8 floats at k < body <= n, inside both slices; the stores write
    // the two 4-lane halves of the 8-element lane arrays.
    unsafe {
        let c = _mm256_set1_pd(center);
        let zero = _mm256_setzero_pd();
        let (mut s_lo, mut s_hi, mut w_lo, mut w_hi) = (zero, zero, zero, zero);
        // One half: `w != 0.0` (true for NaN, as in Rust) selects the term, else +0.0.
        let term = |xv: __m256d, wv: __m256d| {
            let d = _mm256_sub_pd(xv, c);
            let v = if POW == 1 {
                _mm256_mul_pd(d, wv)
            } else {
                _mm256_mul_pd(_mm256_mul_pd(d, d), wv)
            };
            _mm256_and_pd(_mm256_cmp_pd::<_CMP_NEQ_UQ>(wv, zero), v)
        };
        let mut k = 0;
        while k < body {
            let xv = _mm256_loadu_ps(x.as_ptr().add(k));
            let mv = _mm256_loadu_ps(m.as_ptr().add(k));
            let (x_lo, x_hi) = (
                _mm256_cvtps_pd(_mm256_castps256_ps128(xv)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(xv)),
            );
            let (m_lo, m_hi) = (
                _mm256_cvtps_pd(_mm256_castps256_ps128(mv)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(mv)),
            );
            s_lo = _mm256_add_pd(s_lo, term(x_lo, m_lo));
            s_hi = _mm256_add_pd(s_hi, term(x_hi, m_hi));
            w_lo = _mm256_add_pd(w_lo, m_lo);
            w_hi = _mm256_add_pd(w_hi, m_hi);
            k += LANES;
        }
        _mm256_storeu_pd(s.as_mut_ptr(), s_lo);
        _mm256_storeu_pd(s.as_mut_ptr().add(4), s_hi);
        _mm256_storeu_pd(w.as_mut_ptr(), w_lo);
        _mm256_storeu_pd(w.as_mut_ptr().add(4), w_hi);
    }
    finish_f32::<POW>(&x[body..n], &m[body..n], center, s, w)
}

/// [`masked_sums_f32_avx`] with AVX-512: the 8 lanes are one register, and the mask select is
/// folded into a zero-masking multiply (`m != 0 ? d * m : +0.0`, the same value as the AVX
/// copy's compare-and-AND), so a vector of 8 elements costs 6 instructions instead of 17 and
/// every lane sees the same operations in the same order: the same bits as the other copies.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn masked_sums_f32_avx512<const POW: u8>(x: &[f32], m: &[f32], center: f64) -> (f64, f64) {
    use std::arch::x86_64::{
        _mm256_loadu_ps, _mm512_add_pd, _mm512_cmp_pd_mask, _mm512_cvtps_pd, _mm512_maskz_mul_pd,
        _mm512_mul_pd, _mm512_set1_pd, _mm512_setzero_pd, _mm512_storeu_pd, _mm512_sub_pd,
        _CMP_NEQ_UQ,
    };
    let n = x.len().min(m.len());
    let body = n / LANES * LANES;
    let (mut s, mut w) = ([0.0f64; LANES], [0.0f64; LANES]);
    // SAFETY: every load reads 8 floats at k < body <= n, inside both slices; the stores write
    // the 8-element lane arrays.
    unsafe {
        let c = _mm512_set1_pd(center);
        let zero = _mm512_setzero_pd();
        let (mut sv, mut wv) = (zero, zero);
        let mut k = 0;
        while k < body {
            let xv = _mm512_cvtps_pd(_mm256_loadu_ps(x.as_ptr().add(k)));
            let mv = _mm512_cvtps_pd(_mm256_loadu_ps(m.as_ptr().add(k)));
            let keep = _mm512_cmp_pd_mask::<_CMP_NEQ_UQ>(mv, zero);
            let d = _mm512_sub_pd(xv, c);
            let t = if POW == 1 {
                _mm512_maskz_mul_pd(keep, d, mv)
            } else {
                _mm512_maskz_mul_pd(keep, _mm512_mul_pd(d, d), mv)
            };
            sv = _mm512_add_pd(sv, t);
            wv = _mm512_add_pd(wv, mv);
            k += LANES;
        }
        _mm512_storeu_pd(s.as_mut_ptr(), sv);
        _mm512_storeu_pd(w.as_mut_ptr(), wv);
    }
    finish_f32::<POW>(&x[body..n], &m[body..n], center, s, w)
}

/// The tail of the SIMD copies: the last `< LANES` elements into lanes `0..`, then the fold.
#[inline(always)]
fn finish_f32<const POW: u8>(
    x: &[f32],
    m: &[f32],
    center: f64,
    mut s: [f64; LANES],
    mut w: [f64; LANES],
) -> (f64, f64) {
    for (l, (&xv, &mv)) in x.iter().zip(m).enumerate() {
        let wv = f64::from(mv);
        s[l] += masked_term::<POW>(f64::from(xv), wv, center);
        w[l] += wv;
    }
    (fold(&s), fold(&w))
}

/// One position's term of [`masked_sums_body`] (in f64).
#[inline(always)]
fn masked_term<const POW: u8>(x: f64, w: f64, center: f64) -> f64 {
    let d = x - center;
    let v = if POW == 1 { d * w } else { d * d * w };
    if w != 0.0 {
        v
    } else {
        0.0
    }
}

/// `(sum of (x - center) ^ POW * m over m != 0, sum of m)` of one slice pair, the fastest copy
/// for `T`; see [`masked_sums_body`].
#[inline]
pub(crate) fn masked_sums<T: Real, const POW: u8>(x: &[T], m: &[T], center: f64) -> (f64, f64) {
    T::masked_sums::<POW>(x, m, center)
}

/// [`masked_sums`] of a whole slice pair: blocks of [`BLOCK`] elements in parallel, folded in
/// block order.
fn masked_total<T: Real, const POW: u8>(x: &[T], m: &[T], center: f64) -> Result<(f64, f64)> {
    let n = x.len().min(m.len());
    let parts = parallel::map_indices(n.div_ceil(BLOCK), 1, &|i| {
        let r = i * BLOCK..((i + 1) * BLOCK).min(n);
        masked_sums::<T, POW>(&x[r.clone()], &m[r], center)
    })?;
    Ok(parts
        .iter()
        .fold((0.0, 0.0), |(a, b), &(s, w)| (a + s, b + w)))
}

/// Masked mean `sum(x*m) / (sum(m) + 1e-8)` of a slice pair (CPU, f64).
pub fn mean_cpu<T: Real>(x: &[T], m: &[T]) -> Result<f64> {
    let (sum, count) = masked_total::<T, 1>(x, m, 0.0)?;
    Ok(sum / (count + MASK_EPS))
}

/// Statistics of a slice pair (CPU, f64, fixed-order reduction); errors when sum(m) <= 1.
pub fn stats_cpu<T: Real>(x: &[T], m: &[T], arg: &str) -> Result<MaskedStats> {
    let (sum, count) = masked_total::<T, 1>(x, m, 0.0)?;
    if count <= 1.0 || count.is_nan() {
        return Err(Error::value(
            arg,
            "a mask with more than one selected element (the variance is unbiased)",
            format!("sum(mask) = {count}"),
        ));
    }
    let mean = sum / (count + MASK_EPS);
    let (sq, _) = masked_total::<T, 2>(x, m, mean)?;
    let var = sq / (count + MASK_EPS) * count / (count - 1.0);
    Ok(MaskedStats { mean, var, count })
}

/// Whitens `x` in place with `stats`: `(x - mean) / sqrt(var + 1e-8)` at every position.
pub fn whiten_in_place<T: Real>(x: &mut [T], stats: MaskedStats) -> Result<()> {
    let scale = 1.0 / (stats.var + MASK_EPS).sqrt();
    parallel::for_each_chunk_mut(x, BLOCK, &|_, chunk| {
        whiten_chunk_dispatch(chunk, None, stats.mean, scale);
    })
}

/// `out = (x - mean) / sqrt(var + 1e-8)` with `stats`, for a fresh `out` of `x`'s length.
pub fn whiten_into<T: Real>(out: &mut [T], x: &[T], stats: MaskedStats) -> Result<()> {
    let scale = 1.0 / (stats.var + MASK_EPS).sqrt();
    parallel::for_each_chunk_mut(out, BLOCK, &|k, chunk| {
        let start = k * BLOCK;
        whiten_chunk_dispatch(
            chunk,
            Some(&x[start..start + chunk.len()]),
            stats.mean,
            scale,
        );
    })
}

/// `o[k] = ((src[k] or o[k]) - mean) * scale` in f64, rounded to `T` once.
#[inline(always)]
fn whiten_chunk<T: Real>(o: &mut [T], src: Option<&[T]>, mean: f64, scale: f64) {
    let f = |v: T| T::from_f64((v.to_f64() - mean) * scale);
    match src {
        Some(src) => {
            for (ov, &v) in o.iter_mut().zip(src) {
                *ov = f(v);
            }
        }
        None => {
            for ov in o.iter_mut() {
                *ov = f(*ov);
            }
        }
    }
}

/// [`whiten_chunk`] compiled for AVX2 (the same operations per element, so the same bits).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn whiten_chunk_avx2<T: Real>(o: &mut [T], src: Option<&[T]>, mean: f64, scale: f64) {
    whiten_chunk(o, src, mean, scale);
}

fn whiten_chunk_dispatch<T: Real>(o: &mut [T], src: Option<&[T]>, mean: f64, scale: f64) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { whiten_chunk_avx2(o, src, mean, scale) };
        return;
    }
    whiten_chunk(o, src, mean, scale);
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

/// True when the CPU kernels may serve `x` and `mask`: CPU tensors that autograd does not
/// track (the device path's tch ops record the graph when one of them requires grad).
fn cpu_kernel_applies(x: &Tensor, mask: &Tensor, path: TensorPath) -> Result<bool> {
    let tracked = x.requires_grad() || mask.requires_grad();
    match path.resolve(x.device())? {
        TensorPath::Cpu if !tracked => Ok(true),
        _ => Ok(false),
    }
}

/// verl's `masked_mean` over all elements: sum(x*m) / (sum(m) + 1e-8), as a 0-d tensor.
pub fn masked_mean(x: &Tensor, mask: &Tensor, path: TensorPath) -> Result<Tensor> {
    check_pair(x, mask)?;
    let kind = float_kind(x)?;
    let out_kind = tensor::kind_of(x, "values")?;
    if cpu_kernel_applies(x, mask, path)? {
        let (xs, ms) = (compute_view(x, kind)?, compute_view(mask, kind)?);
        let mean = if kind == Kind::Double {
            mean_cpu::<f64>(
                tensor::cpu_slice(&xs, "values")?,
                tensor::cpu_slice(&ms, "mask")?,
            )?
        } else {
            mean_cpu::<f32>(
                tensor::cpu_slice(&xs, "values")?,
                tensor::cpu_slice(&ms, "mask")?,
            )?
        };
        return scalar(mean, kind, out_kind);
    }
    let (xm, m) = masked_product(&x.f_to_kind(kind)?, mask, kind)?;
    let out = xm
        .f_sum(kind)?
        .f_div(&m.f_sum(kind)?.f_add_scalar(MASK_EPS)?)?;
    Ok(out.f_to_kind(out_kind)?)
}

/// verl's unbiased `masked_var` as a 0-d tensor; errors when sum(mask) <= 1.
pub fn masked_var(x: &Tensor, mask: &Tensor, path: TensorPath) -> Result<Tensor> {
    check_pair(x, mask)?;
    let kind = float_kind(x)?;
    let out_kind = tensor::kind_of(x, "values")?;
    if cpu_kernel_applies(x, mask, path)? {
        let (xs, ms) = (compute_view(x, kind)?, compute_view(mask, kind)?);
        let st = if kind == Kind::Double {
            stats_cpu::<f64>(
                tensor::cpu_slice(&xs, "values")?,
                tensor::cpu_slice(&ms, "mask")?,
                "mask",
            )?
        } else {
            stats_cpu::<f32>(
                tensor::cpu_slice(&xs, "values")?,
                tensor::cpu_slice(&ms, "mask")?,
                "mask",
            )?
        };
        return scalar(st.var, kind, out_kind);
    }
    let (_, var) = stats_device(x, mask, kind, "mask")?;
    Ok(var.f_to_kind(out_kind)?)
}

/// A 0-d tensor holding `v` rounded to the compute dtype, then to the input dtype (as the
/// device path rounds).
fn scalar(v: f64, kind: Kind, out_kind: Kind) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(&[v])?
        .f_reshape([])?
        .f_to_kind(kind)?
        .f_to_kind(out_kind)?)
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
            let mut out = Tensor::f_empty_like(&xs)?;
            if batch.kind == Kind::Double {
                whiten_cpu::<f64>(&xs, &ms, &mut out)?;
            } else {
                whiten_cpu::<f32>(&xs, &ms, &mut out)?;
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

fn whiten_cpu<T: Real>(xs: &Tensor, ms: &Tensor, out: &mut Tensor) -> Result<()> {
    let stats = stats_cpu(
        tensor::cpu_slice::<T>(xs, "values")?,
        tensor::cpu_slice::<T>(ms, "mask")?,
        "mask",
    )?;
    whiten_into(
        tensor::cpu_slice_mut::<T>(out, "out")?,
        tensor::cpu_slice::<T>(xs, "values")?,
        stats,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: the spec's sums, one position at a time in lane order (element k to lane
    /// k % 8, lanes folded as `fold`).
    fn reference(x: &[f32], m: &[f32], center: f64, pow: u8) -> (u64, u64) {
        let (mut s, mut w) = ([0.0f64; LANES], [0.0f64; LANES]);
        for (k, (&xv, &mv)) in x.iter().zip(m).enumerate() {
            let wv = f64::from(mv);
            if wv != 0.0 {
                let d = f64::from(xv) - center;
                s[k % LANES] += if pow == 1 { d * wv } else { d * d * wv };
            }
            w[k % LANES] += wv;
        }
        (fold(&s).to_bits(), fold(&w).to_bits())
    }

    /// One SIMD copy of the f32 masked sums.
    #[cfg(target_arch = "x86_64")]
    type SumsFn = unsafe fn(&[f32], &[f32], f64) -> (f64, f64);

    fn bits((a, b): (f64, f64)) -> (u64, u64) {
        (a.to_bits(), b.to_bits())
    }

    proptest! {
        #[test]
        fn masked_sum_copies_agree_bit_for_bit(
            x in prop::collection::vec(
                prop_oneof![
                    8 => -1e3f32..1e3,
                    1 => Just(f32::NAN),
                    1 => Just(f32::INFINITY),
                    1 => Just(-0.0f32),
                ],
                0..70,
            ),
            mask_bits in prop::collection::vec(0u8..4, 70),
            center in -2.0f64..2.0,
        ) {
            // Masks of 0, 1, -0.0 and a fraction; NaN and inf in x sit under any of them.
            let m: Vec<f32> = mask_bits[..x.len()]
                .iter()
                .map(|&b| [0.0f32, 1.0, -0.0, 0.25][b as usize])
                .collect();
            for (c, pow) in [(0.0, 1u8), (center, 2)] {
                let want = reference(&x, &m, c, pow);
                let (fast, portable) = if pow == 1 {
                    (masked_sums_f32::<1>(&x, &m, c), masked_sums_body::<f32, 1>(&x, &m, c))
                } else {
                    (masked_sums_f32::<2>(&x, &m, c), masked_sums_body::<f32, 2>(&x, &m, c))
                };
                prop_assert_eq!(bits(fast), want);
                prop_assert_eq!(bits(portable), want);
                // Each SIMD copy on its own (the dispatch above runs only the widest one).
                #[cfg(target_arch = "x86_64")]
                {
                    let one = |f: SumsFn| {
                        // SAFETY: called only when the CPU has the copy's features (below).
                        bits(unsafe { f(&x, &m, c) })
                    };
                    let (avx, avx512): (SumsFn, SumsFn) = if pow == 1 {
                        (masked_sums_f32_avx::<1>, masked_sums_f32_avx512::<1>)
                    } else {
                        (masked_sums_f32_avx::<2>, masked_sums_f32_avx512::<2>)
                    };
                    if crate::simd::has_avx2() {
                        prop_assert_eq!(one(avx), want);
                    }
                    if crate::simd::has_avx512f() {
                        prop_assert_eq!(one(avx512), want);
                    }
                }
            }
        }
    }

    #[test]
    fn masked_positions_never_leak() {
        // NaN and inf under mask 0 add nothing; the hand-worked mean and variance of 1, 3.
        let x = [1.0f32, f32::NAN, 3.0, f32::INFINITY, -f32::INFINITY];
        let m = [1.0f32, 0.0, 1.0, 0.0, -0.0];
        let st = stats_cpu(&x, &m, "mask").unwrap();
        assert!((st.mean - 4.0 / (2.0 + MASK_EPS)).abs() < 1e-15);
        assert!((st.var - 2.0).abs() < 1e-6);
        assert_eq!(st.count, 2.0);
        assert!(matches!(
            stats_cpu(&x[..2], &m[..2], "mask"),
            Err(Error::Value(_))
        ));
    }

    #[test]
    fn whiten_copies_agree() {
        let x: Vec<f64> = (0..1000).map(|k| (k as f64 * 0.7).cos() * 5.0).collect();
        let st = MaskedStats {
            mean: 0.3,
            var: 2.5,
            count: 10.0,
        };
        let mut a = vec![0.0; x.len()];
        whiten_into(&mut a, &x, st).unwrap();
        let mut b = x.clone();
        whiten_in_place(&mut b, st).unwrap();
        let scale = 1.0 / (2.5f64 + MASK_EPS).sqrt();
        for ((&u, &v), &xv) in a.iter().zip(&b).zip(&x) {
            assert_eq!(u.to_bits(), ((xv - 0.3) * scale).to_bits());
            assert_eq!(u.to_bits(), v.to_bits());
        }
    }
}
