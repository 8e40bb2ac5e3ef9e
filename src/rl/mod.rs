//! RL math over `[B, T]` response tensors: masked statistics, advantage estimators, KL penalties,
//! policy losses and loss aggregation.
//!
//! Spec: `shared/spec/rl_math.md`. Defaults follow verl 0.9.1 (`core_algos`), to float32 rounding.
//!
//! Every function has a CPU path over raw memory (rayon over rows, reductions in f64 combined in
//! row order, so the bits never depend on the thread count) and a device path of tch ops.
//! Inputs may be float32 or float64 (computed natively) or bf16/fp16 (computed in float32 and
//! returned in the input dtype).

pub mod advantages;
pub mod entropy;
pub mod kl;
pub mod loss;
pub mod masked;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::tensor::{self, kind_name};

/// Element types the CPU kernels run on: arithmetic in the storage type, as torch computes.
pub trait Real:
    tch::kind::Element
    + Copy
    + Send
    + Sync
    + 'static
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    const ONE: Self;
    /// Widens to f64 for reductions.
    fn to_f64(self) -> f64;
    /// Narrows from f64 (round to nearest).
    fn from_f64(v: f64) -> Self;
    /// Sum of a row in f64 with fixed lanes (`advantages::lane_sum`): the same bits on every CPU.
    fn row_sum(row: &[Self]) -> f64;
    /// `exp(x)` for `|x| <= 80` (callers clamp first); NaN stays NaN. Branch-free for f32, so
    /// loops over it vectorise.
    fn exp_bounded(self) -> Self;
    /// torch's `clamp`: NaN stays NaN. Written as selects (not `f32::clamp`) so that loops
    /// over it vectorise; NaN fails both tests.
    #[inline(always)]
    fn clamp_to(self, lo: Self, hi: Self) -> Self {
        let x = if self < lo { lo } else { self };
        if x > hi {
            hi
        } else {
            x
        }
    }
    fn abs(self) -> Self;
    fn is_nan(self) -> bool;
    /// `dst[k] = a * src[k]` (the pair rounded as one multiplication in `Self`). `stream` asks
    /// for non-temporal stores where the type and the machine have them: for outputs much larger
    /// than the caches, they skip reading `dst` into the cache before overwriting it. After
    /// streamed rows, the caller runs [`crate::simd::store_fence`] before it hands them on (one
    /// fence per batch of rows: a fence per 4 KB row stalled the write-combining buffers).
    #[inline(always)]
    fn scale_row(dst: &mut [Self], src: &[Self], a: Self, stream: bool) {
        let _ = stream;
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = a * s;
        }
    }
    /// [`masked::masked_sums`] of one slice pair (the portable copy unless a type has its own).
    #[inline(always)]
    fn masked_sums<const POW: u8>(x: &[Self], m: &[Self], center: f64) -> (f64, f64) {
        masked::masked_sums_generic::<Self, POW>(x, m, center)
    }
}

impl Real for f32 {
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn row_sum(row: &[Self]) -> f64 {
        advantages::lane_sum_f32(row)
    }
    #[inline(always)]
    fn exp_bounded(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    #[inline(always)]
    fn scale_row(dst: &mut [Self], src: &[Self], a: Self, stream: bool) {
        #[cfg(target_arch = "x86_64")]
        if stream {
            if crate::simd::has_avx2() {
                // SAFETY: the CPU supports AVX2 (and so AVX), checked just above.
                unsafe { scale_row_stream_f32_avx(dst, src, a) };
            } else {
                scale_row_stream_f32(dst, src, a);
            }
            return;
        }
        let _ = stream;
        scale_row_f32(dst, src, a);
    }
    #[inline(always)]
    fn masked_sums<const POW: u8>(x: &[Self], m: &[Self], center: f64) -> (f64, f64) {
        masked::masked_sums_f32::<POW>(x, m, center)
    }
}

crate::simd::avx2_dispatch! {
    /// `dst[k] = a * src[k]`, compiled for AVX2 where the CPU has it (8 lanes instead of 4: the
    /// same IEEE products, so the same bits).
    fn scale_row_f32(dst: &mut [f32], src: &[f32], a: f32) -> () => scale_row_f32_body
}

#[inline(always)]
fn scale_row_f32_body(dst: &mut [f32], src: &[f32], a: f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = a * s;
    }
}

/// [`scale_row_stream_f32`] with 32-byte AVX vectors (the same products, so the same bits).
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn scale_row_stream_f32_avx(dst: &mut [f32], src: &[f32], a: f32) {
    use std::arch::x86_64::{_mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_stream_ps};
    let n = dst.len().min(src.len());
    // Scalar stores until `dst` is 32-byte aligned, whole vectors, then the scalar tail.
    let head = dst.as_ptr().align_offset(32).min(n);
    let body_end = head + (n - head) / 8 * 8;
    for k in (0..head).chain(body_end..n) {
        dst[k] = a * src[k];
    }
    // SAFETY: k + 8 <= body_end <= n keeps every load and store inside both slices; the store
    // address dst + k is 32-byte aligned because dst + head is and k - head is a multiple of 8.
    unsafe {
        let va = _mm256_set1_ps(a);
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        let mut k = head;
        while k < body_end {
            _mm256_stream_ps(d.add(k), _mm256_mul_ps(_mm256_loadu_ps(s.add(k)), va));
            k += 8;
        }
    }
}

/// [`Real::scale_row`] for f32 with SSE non-temporal stores (SSE is part of x86_64); the caller
/// fences (see [`Real::scale_row`]).
#[cfg(target_arch = "x86_64")]
fn scale_row_stream_f32(dst: &mut [f32], src: &[f32], a: f32) {
    use std::arch::x86_64::{_mm_loadu_ps, _mm_mul_ps, _mm_set1_ps, _mm_stream_ps};
    let n = dst.len().min(src.len());
    // Scalar stores until `dst` is 16-byte aligned, whole vectors, then the scalar tail.
    let head = dst.as_ptr().align_offset(16).min(n);
    let body_end = head + (n - head) / 4 * 4;
    for k in (0..head).chain(body_end..n) {
        dst[k] = a * src[k];
    }
    // SAFETY: k + 4 <= body_end <= n keeps every load and store inside both slices; the store
    // address dst + k is 16-byte aligned because dst + head is and k - head is a multiple of 4.
    unsafe {
        let va = _mm_set1_ps(a);
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        let mut k = head;
        while k < body_end {
            _mm_stream_ps(d.add(k), _mm_mul_ps(_mm_loadu_ps(s.add(k)), va));
            k += 4;
        }
    }
}

impl Real for f64 {
    const ONE: Self = 1.0;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn row_sum(row: &[Self]) -> f64 {
        advantages::lane_sum(row)
    }
    #[inline(always)]
    fn exp_bounded(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f64::abs(self)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// `exp(x)` in f32 for `|x| <= 80`: `x = n ln2 + r` with `|r| <= ln2 / 2` (n rounded with the
/// 1.5 * 2^23 trick, which SSE2 vectorises), a degree-6 polynomial for `e^r` fitted for the
/// least maximum relative error on that interval (2e-9 in exact arithmetic, against 6e-9 for
/// the degree-7 Taylor series it replaced; 1.1e-7, about 1 ulp, once evaluated in f32) and
/// `2^n` built in the exponent bits.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.499_999_94
                + r * (0.166_664_3
                    + r * (0.041_668_005 + r * (0.008_374_196 + r * 0.001_384_360_7)))));
    // The low bits of t hold n (two's complement); 2^n has exponent field n + 127.
    let k = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let scale = f32::from_bits((k.wrapping_add(127) as u32) << 23);
    p * scale
}

/// A `[B, T]` float batch validated and converted for computation.
pub(crate) struct Batch {
    /// The input's dtype, restored on the outputs.
    pub out_kind: Kind,
    /// float32 or float64: the dtype the kernels run in.
    pub kind: Kind,
    pub device: Device,
    pub rows: usize,
    pub cols: usize,
}

/// Checks that `t` is a 2-D float tensor and returns its batch description.
pub(crate) fn float_batch(t: &Tensor, arg: &str) -> Result<Batch> {
    tensor::expect_ndim(t, arg, 2)?;
    let kind = tensor::kind_of(t, arg)?;
    let compute = match kind {
        Kind::Float | Kind::Double => kind,
        Kind::Half | Kind::BFloat16 => Kind::Float,
        other => {
            return Err(Error::dtype(
                arg,
                "a floating-point tensor (float32, float64, bfloat16 or float16)",
                kind_name(other),
            ))
        }
    };
    let size = t.size();
    Ok(Batch {
        out_kind: kind,
        kind: compute,
        device: t.device(),
        rows: size[0] as usize,
        cols: size[1] as usize,
    })
}

/// Checks that `other` has exactly the shape and device of the batch led by `lead`.
pub(crate) fn expect_same_shape(
    other: &Tensor,
    arg: &str,
    lead: &Tensor,
    lead_arg: &str,
) -> Result<()> {
    if other.size() != lead.size() {
        return Err(Error::shape(
            arg,
            format!("the shape of `{lead_arg}` {}", tensor::shape_name(lead)),
            tensor::shape_name(other),
        ));
    }
    tensor::expect_device(other, arg, lead.device())
}

/// `t` in the compute dtype, contiguous (no copy when it already is).
pub(crate) fn compute_view(t: &Tensor, kind: Kind) -> Result<Tensor> {
    let t = if tensor::kind_of(t, "tensor")? == kind {
        t.shallow_clone()
    } else {
        t.f_to_kind(kind)?
    };
    Ok(tensor::contiguous(&t))
}

/// Per-row group index in `0..n_groups` (first-appearance order) from int64 group ids.
pub fn dense_groups(ids: &[i64]) -> (Vec<usize>, usize) {
    // Ids in a range not much wider than the batch (0..B/G, row // G, small uids) go through a
    // table instead of a hash map.
    if let (Some(&lo), Some(&hi)) = (ids.iter().min(), ids.iter().max()) {
        let span = (i128::from(hi) - i128::from(lo)) as u128;
        if span < 4 * ids.len() as u128 + 1024 {
            let mut table = vec![usize::MAX; span as usize + 1];
            let mut n = 0;
            let dense = ids
                .iter()
                .map(|&id| {
                    let slot = &mut table[(i128::from(id) - i128::from(lo)) as usize];
                    if *slot == usize::MAX {
                        *slot = n;
                        n += 1;
                    }
                    *slot
                })
                .collect();
            return (dense, n);
        }
    }
    dense_groups_hashed(ids)
}

fn dense_groups_hashed(ids: &[i64]) -> (Vec<usize>, usize) {
    let mut map = std::collections::HashMap::with_capacity(ids.len());
    let dense = ids
        .iter()
        .map(|&id| {
            let next = map.len();
            *map.entry(id).or_insert(next)
        })
        .collect();
    (dense, map.len())
}

/// Chunk length of elementwise CPU kernels (results never depend on it).
const CHUNK: usize = 1 << 14;

/// Output size from which `broadcast_cpu` (the outcome estimators) writes with non-temporal
/// stores: there they measured faster, while the elementwise kernels below lost with them.
pub(crate) const STREAM_BYTES: usize = 8 << 20;

/// Elementwise CPU kernel: `out[k] = f(a[k], b[k])`.
pub(crate) fn map2_cpu<T: Real>(
    a: &[T],
    b: &[T],
    shape: &[i64],
    f: impl Fn(T, T) -> T + Sync,
) -> Result<Tensor> {
    let mut out = tensor::empty_cpu::<T>(shape)?;
    let o = tensor::cpu_slice_mut::<T>(&mut out, "out")?;
    // The caller works on chunk 0 at once; pool threads claim chunks as they wake.
    crate::parallel::for_each_chunk_mut(o, CHUNK, &|k, oc| {
        let r = k * CHUNK..k * CHUNK + oc.len();
        map2_chunk_dispatch(oc, &a[r.clone()], &b[r], &f);
    })?;
    Ok(out)
}

/// Elementwise CPU kernel over three inputs: `out[k] = f(a[k], b[k], c[k])`.
pub(crate) fn map3_cpu<T: Real>(
    a: &[T],
    b: &[T],
    c: &[T],
    shape: &[i64],
    f: impl Fn(T, T, T) -> T + Sync,
) -> Result<Tensor> {
    let mut out = tensor::empty_cpu::<T>(shape)?;
    let o = tensor::cpu_slice_mut::<T>(&mut out, "out")?;
    crate::parallel::for_each_chunk_mut(o, CHUNK, &|k, oc| {
        let r = k * CHUNK..k * CHUNK + oc.len();
        map3_chunk_dispatch(oc, &a[r.clone()], &b[r.clone()], &c[r], &f);
    })?;
    Ok(out)
}

#[inline(always)]
fn map2_chunk<T: Real, F: Fn(T, T) -> T>(o: &mut [T], a: &[T], b: &[T], f: &F) {
    for ((ov, &av), &bv) in o.iter_mut().zip(a).zip(b) {
        *ov = f(av, bv);
    }
}

#[inline(always)]
fn map3_chunk<T: Real, F: Fn(T, T, T) -> T>(o: &mut [T], a: &[T], b: &[T], c: &[T], f: &F) {
    for (((ov, &av), &bv), &cv) in o.iter_mut().zip(a).zip(b).zip(c) {
        *ov = f(av, bv, cv);
    }
}

/// [`map2_chunk`] compiled for the widest vector extension the CPU has
/// ([`crate::simd::widest`]: 8 or 16 f32 lanes instead of SSE2's 4, the same bits). Non-temporal
/// stores were tried here and lost: the inputs of these kernels are usually still in the cache,
/// and so is the memory the output reuses.
fn map2_chunk_dispatch<T: Real, F: Fn(T, T) -> T>(o: &mut [T], a: &[T], b: &[T], f: &F) {
    crate::simd::widest(
        #[inline(always)]
        || map2_chunk(o, a, b, f),
    )
}

/// [`map3_chunk`] compiled for the widest vector extension the CPU has (see
/// [`map2_chunk_dispatch`]).
fn map3_chunk_dispatch<T: Real, F: Fn(T, T, T) -> T>(
    o: &mut [T],
    a: &[T],
    b: &[T],
    c: &[T],
    f: &F,
) {
    crate::simd::widest(
        #[inline(always)]
        || map3_chunk(o, a, b, c, f),
    )
}

/// Compute and output dtypes for a pair of float tensors of any (equal) shape on one device.
pub(crate) fn float_pair(a: &Tensor, a_arg: &str, b: &Tensor, b_arg: &str) -> Result<(Kind, Kind)> {
    let ka = float_kind_of(a, a_arg)?;
    let kb = float_kind_of(b, b_arg)?;
    if a.size() != b.size() {
        return Err(Error::shape(
            b_arg,
            format!("the shape of `{a_arg}` {}", tensor::shape_name(a)),
            tensor::shape_name(b),
        ));
    }
    tensor::expect_device(b, b_arg, a.device())?;
    let compute = if ka == Kind::Double || kb == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    };
    let out = if ka == kb { ka } else { compute };
    Ok((compute, out))
}

/// The dtype of a floating-point tensor, or a dtype error naming `arg`.
pub(crate) fn float_kind_of(t: &Tensor, arg: &str) -> Result<Kind> {
    match tensor::kind_of(t, arg)? {
        k @ (Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) => Ok(k),
        other => Err(Error::dtype(
            arg,
            "a floating-point tensor (float32, float64, bfloat16 or float16)",
            kind_name(other),
        )),
    }
}

/// `x` rounded to the precision of `kind` (metrics reported as verl's `.item()` of a tensor).
pub(crate) fn round_to(kind: Kind, x: f64) -> f64 {
    if kind == Kind::Double {
        x
    } else {
        f64::from(x as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x <= 80.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    /// The SIMD copies of the elementwise kernels give the baseline copy's bits, on the
    /// low_var_kl formula (clamps, the exp polynomial, NaN and inf) and a three-input select.
    #[test]
    fn map_kernel_copies_agree_bit_for_bit() {
        let kl = |lp: f32, r: f32| {
            let d = (r - lp).clamp_to(-20.0, 20.0);
            (d.exp_bounded() - d - 1.0).clamp_to(-10.0, 10.0)
        };
        let sel3 = |a: f32, b: f32, c: f32| if c != 0.0 { a * b.exp_bounded() } else { 0.0 };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 60.0
        };
        for len in [0usize, 1, 7, 8, 15, 16, 17, 31, 33, 100, 1000] {
            let mut a: Vec<f32> = (0..len).map(|_| next()).collect();
            let b: Vec<f32> = (0..len).map(|_| next()).collect();
            let c: Vec<f32> = (0..len).map(|k| (k % 3) as f32).collect();
            for k in (0..len).step_by(7) {
                a[k] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0][k % 4];
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let (mut want2, mut want3) = (vec![0.0f32; len], vec![0.0f32; len]);
            map2_chunk(&mut want2, &a, &b, &kl);
            map3_chunk(&mut want3, &a, &b, &c, &sel3);
            use crate::simd::{at_width, Width};
            for width in [Width::Avx2, Width::Avx512] {
                if !width.supported() {
                    continue;
                }
                let mut o = vec![0.0f32; len];
                at_width(width, || map2_chunk(&mut o, &a, &b, &kl));
                assert_eq!(bits(&o), bits(&want2), "{width:?} map2 len {len}");
                at_width(width, || map3_chunk(&mut o, &a, &b, &c, &sel3));
                assert_eq!(bits(&o), bits(&want3), "{width:?} map3 len {len}");
            }
        }
    }

    #[test]
    fn scale_row_copies_agree_with_scalar_products() {
        // Every length around the vector widths, at every offset from a 32-byte boundary, for
        // the plain, AVX2 and both streaming copies.
        let src: Vec<f32> = (0..300)
            .map(|k| (k as f32 * 0.37).sin() * 3.0 + 0.1)
            .collect();
        let a = 1.0f32 / 3.0;
        for offset in 0..8 {
            for len in [0usize, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64, 255, 292] {
                let want: Vec<u32> = src[..len].iter().map(|&s| (a * s).to_bits()).collect();
                for stream in [false, true] {
                    let mut buf = vec![f32::NAN; len + 8];
                    let dst = &mut buf[offset..offset + len];
                    <f32 as Real>::scale_row(dst, &src[..len], a, stream);
                    crate::simd::store_fence();
                    let got: Vec<u32> = dst.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(got, want, "len {len} offset {offset} stream {stream}");
                }
                let mut dst = vec![0.0f32; len];
                #[cfg(target_arch = "x86_64")]
                {
                    scale_row_stream_f32(&mut dst, &src[..len], a);
                    crate::simd::store_fence();
                    assert!(dst.iter().zip(&want).all(|(x, &w)| x.to_bits() == w));
                }
                scale_row_f32_body(&mut dst, &src[..len], a);
                assert!(dst.iter().zip(&want).all(|(x, &w)| x.to_bits() == w));
            }
        }
    }
}
