//! Views of a [`Layout`]: dense `[B, 1, L, L]` masks, per-token forbidden intervals (for a
//! FlexAttention `mask_mod` and the device path), and FlexAttention tile tables.
//!
//! A query's allowed keys are: itself only for a pad; otherwise the real keys at or before it,
//! minus at most one interval per block it is in a path of (that block's earlier paths, which
//! are contiguous). Every view is built from these O(L) facts.

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use super::batch::Layout;
use crate::error::{Error, Result};
use crate::tensor::{self, TensorPath};

/// Default memory budget of a dense mask: 4 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

/// The dense mask's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// True = attend (for sdpa).
    Bool,
    /// 0 where allowed, the dtype's lowest finite value elsewhere (for eager attention). The kind
    /// is float16, bfloat16, float32 or float64.
    Additive(Kind),
}

impl MaskKind {
    /// Parses `kind` (`"bool"` | `"additive"`) and, for additive masks, the dtype name
    /// (`"float32"`, `"bfloat16"`, ...; `None` = float32).
    pub fn parse(kind: &str, dtype: Option<&str>) -> Result<Self> {
        match kind {
            "bool" => match dtype {
                None | Some("bool") => Ok(MaskKind::Bool),
                Some(other) => Err(Error::value(
                    "dtype",
                    "None or torch.bool for kind='bool'",
                    format!("torch.{other}"),
                )),
            },
            "additive" => {
                let k = match dtype.unwrap_or("float32") {
                    "float32" => Kind::Float,
                    "float64" => Kind::Double,
                    "float16" => Kind::Half,
                    "bfloat16" => Kind::BFloat16,
                    other => {
                        return Err(Error::value(
                            "dtype",
                            "a floating dtype (float16, bfloat16, float32, float64)",
                            format!("torch.{other}"),
                        ))
                    }
                };
                Ok(MaskKind::Additive(k))
            }
            other => Err(Error::value(
                "kind",
                "'bool' or 'additive'",
                format!("{other:?}"),
            )),
        }
    }

    fn elem_size(self) -> u64 {
        match self {
            MaskKind::Bool => 1,
            MaskKind::Additive(Kind::Double) => 8,
            MaskKind::Additive(Kind::Float) => 4,
            MaskKind::Additive(_) => 2,
        }
    }
}

/// The dense `[B, 1, L, L]` mask on the layout's device, refused above `max_bytes`.
pub fn dense_mask(layout: &Layout, kind: MaskKind, max_bytes: u64) -> Result<Tensor> {
    let (b, l) = (layout.batch as u64, layout.len as u64);
    let bytes = b
        .saturating_mul(l)
        .saturating_mul(l)
        .saturating_mul(kind.elem_size());
    if bytes > max_bytes {
        return Err(Error::value(
            "max_bytes",
            format!(
                "room for the dense mask: {b} x 1 x {l} x {l} x {} bytes = {bytes} bytes \
                 (use layout.block_mask() for FlexAttention, O(L) memory per row, or raise max_bytes)",
                kind.elem_size()
            ),
            format!("a budget of {max_bytes} bytes"),
        ));
    }
    match layout.path {
        TensorPath::Device => dense_mask_device(layout, kind),
        _ => dense_mask_cpu(layout, kind),
    }
}

fn dense_mask_cpu(layout: &Layout, kind: MaskKind) -> Result<Tensor> {
    let shape = [layout.batch as i64, 1, layout.len as i64, layout.len as i64];
    match kind {
        MaskKind::Bool => {
            let mut out = tensor::empty_cpu::<bool>(&shape)?;
            let buf = tensor::cpu_slice_mut::<bool>(&mut out, "attention_mask")?;
            fill_rows(layout, buf, true, false)?;
            Ok(out)
        }
        MaskKind::Additive(Kind::Float) => {
            let mut out = tensor::empty_cpu::<f32>(&shape)?;
            let buf = tensor::cpu_slice_mut::<f32>(&mut out, "attention_mask")?;
            fill_rows(layout, buf, 0.0, f32::MIN)?;
            Ok(out)
        }
        MaskKind::Additive(Kind::Double) => {
            let mut out = tensor::empty_cpu::<f64>(&shape)?;
            let buf = tensor::cpu_slice_mut::<f64>(&mut out, "attention_mask")?;
            fill_rows(layout, buf, 0.0, f64::MIN)?;
            Ok(out)
        }
        MaskKind::Additive(half) => {
            // Lowest finite values as bits: bfloat16 -3.3895e38, float16 -65504.
            let min_bits: u16 = if half == Kind::BFloat16 {
                0xFF7F
            } else {
                0xFBFF
            };
            let mut out = Tensor::f_empty(shape, (half, Device::Cpu))?;
            let n = out.numel();
            if n > 0 {
                let ptr = tensor::data_ptr(&out, "attention_mask")? as *mut u16;
                // SAFETY: `out` is a fresh contiguous CPU tensor of n 2-byte elements; we hold it
                // mutably for the whole fill.
                let buf = unsafe { std::slice::from_raw_parts_mut(ptr, n) };
                fill_rows(layout, buf, 0u16, min_bits)?;
            }
            let _ = &mut out;
            Ok(out)
        }
    }
}

/// Writes every query row: `yes` where allowed, `no` elsewhere (rayon over rows).
fn fill_rows<T: Copy + Send + Sync>(layout: &Layout, buf: &mut [T], yes: T, no: T) -> Result<()> {
    let l = layout.len;
    if l == 0 {
        return Ok(());
    }
    crate::parallel::install(|| {
        buf.par_chunks_mut(l).enumerate().for_each(|(r, row)| {
            let (b, i) = (r / l, r % l);
            if !layout.is_real(b, i) {
                row.fill(no);
                row[i] = yes;
                return;
            }
            match layout.real_row(b) {
                None => row[..=i].fill(yes),
                Some(real) => {
                    for (dst, &ok) in row[..=i].iter_mut().zip(&real[..=i]) {
                        *dst = if ok { yes } else { no };
                    }
                }
            }
            row[i + 1..].fill(no);
            for (lo, hi) in layout.forbidden(b, i) {
                row[lo..hi].fill(no);
            }
        })
    })
}

/// Per-token forbidden intervals as host arrays `[B, L, D]` (outermost first, empty = `0..0`),
/// with D the most intervals any token has (0 when no token is in a later path).
pub fn interval_arrays(layout: &Layout) -> (Vec<i32>, Vec<i32>, usize) {
    let (bsz, l) = (layout.batch, layout.len);
    let depth = (0..bsz * l)
        .map(|r| layout.forbidden(r / l.max(1), r % l.max(1)).count())
        .max()
        .unwrap_or(0);
    let mut lo = vec![0i32; bsz * l * depth];
    let mut hi = vec![0i32; bsz * l * depth];
    if depth > 0 {
        for r in 0..bsz * l {
            let found: Vec<(usize, usize)> = layout.forbidden(r / l, r % l).collect();
            for (d, &(a, z)) in found.iter().rev().enumerate() {
                lo[r * depth + d] = a as i32;
                hi[r * depth + d] = z as i32;
            }
        }
    }
    (lo, hi, depth)
}

/// The per-token facts a `mask_mod` needs, on the layout's device: `real` bool `[B, L]`,
/// `lo` / `hi` int32 `[B, L, D]` (key `j` is refused for query `i` when `lo <= j < hi` at some
/// level; D may be 0).
pub fn intervals(layout: &Layout) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, l) = (layout.batch as i64, layout.len as i64);
    let real = match &layout.real {
        Some(r) => Tensor::f_from_slice(r)?.f_reshape([b, l])?,
        None => Tensor::f_ones([b, l], (Kind::Bool, Device::Cpu))?,
    };
    let (lo, hi, d) = interval_arrays(layout);
    let lo = Tensor::f_from_slice(&lo)?.f_reshape([b, l, d as i64])?;
    let hi = Tensor::f_from_slice(&hi)?.f_reshape([b, l, d as i64])?;
    let dev = |t: Tensor| -> Result<Tensor> {
        if layout.device == Device::Cpu {
            Ok(t)
        } else {
            Ok(t.f_to_device(layout.device)?)
        }
    };
    Ok((dev(real)?, dev(lo)?, dev(hi)?))
}

/// The dense mask with tch ops on the layout's device, from the O(L) interval arrays.
fn dense_mask_device(layout: &Layout, kind: MaskKind) -> Result<Tensor> {
    let (real, lo, hi) = intervals(layout)?;
    let l = layout.len as i64;
    let dev = layout.device;
    let idx = Tensor::f_arange(l, (Kind::Int, dev))?;
    let q = idx.f_view([1, l, 1])?;
    let k = idx.f_view([1, 1, l])?;
    let real_q = real.f_unsqueeze(2)?;
    let real_k = real.f_unsqueeze(1)?;
    let mut allowed = k
        .f_le_tensor(&q)?
        .f_logical_and(&real_q)?
        .f_logical_and(&real_k)?;
    let levels = lo.size()[2];
    for d in 0..levels {
        let a = lo.f_select(2, d)?.f_unsqueeze(2)?;
        let z = hi.f_select(2, d)?.f_unsqueeze(2)?;
        let inside = k.f_ge_tensor(&a)?.f_logical_and(&k.f_lt_tensor(&z)?)?;
        allowed = allowed.f_logical_and(&inside.f_logical_not()?)?;
    }
    let diag = q.f_eq_tensor(&k)?;
    let pad_self = real_q.f_logical_not()?.f_logical_and(&diag)?;
    let allowed = allowed.f_logical_or(&pad_self)?.f_unsqueeze(1)?;
    match kind {
        MaskKind::Bool => Ok(allowed),
        MaskKind::Additive(k) => {
            let zero = Tensor::f_zeros([], (k, dev))?;
            let min = Tensor::f_full([], lowest(k), (k, dev))?;
            Ok(zero.f_where_self(&allowed, &min)?)
        }
    }
}

fn lowest(kind: Kind) -> f64 {
    match kind {
        Kind::Double => f64::MIN,
        Kind::Float => f32::MIN as f64,
        Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        _ => -65504.0,
    }
}

/// FlexAttention tile tables in `BlockMask.from_kv_blocks` order, each int32 on the layout's
/// device: `kv_num_blocks [B, 1, Qt]`, `kv_indices [B, 1, Qt, Kt]` (partial tiles),
/// `full_kv_num_blocks`, `full_kv_indices` (tiles where every pair is allowed).
///
/// Indices list the tiles of a class in increasing order, then the other tiles in increasing
/// order, exactly as `create_block_mask` orders them. Tiles that overhang the sequence end are
/// never full (torch pads the mask with False before counting).
pub fn block_tables(layout: &Layout, block_size: i64) -> Result<[Tensor; 4]> {
    if block_size <= 0 {
        return Err(Error::value(
            "block_size",
            "a positive tile size",
            block_size,
        ));
    }
    let bs = block_size as usize;
    let (bsz, l) = (layout.batch, layout.len);
    let tiles = l.div_ceil(bs).max(1);
    // Per (b, q tile): one class per kv tile: 0 empty, 1 partial, 2 full.
    let mut classes = vec![0u8; bsz * tiles * tiles];
    crate::parallel::install(|| {
        // prefix[b][k] = real tokens in 0..k of row b.
        let prefixes: Vec<Vec<u32>> = (0..bsz)
            .into_par_iter()
            .map(|b| {
                let mut p = Vec::with_capacity(l + 1);
                let mut acc = 0u32;
                p.push(acc);
                for j in 0..l {
                    acc += u32::from(layout.is_real(b, j));
                    p.push(acc);
                }
                p
            })
            .collect();
        classes
            .par_chunks_mut(tiles)
            .enumerate()
            .for_each(|(r, cls)| {
                let b = r / tiles;
                classify_q_tile(layout, &prefixes[b], b, r % tiles, bs, cls)
            })
    })?;
    let mut num = vec![0i32; bsz * tiles];
    let mut idx = vec![0i32; bsz * tiles * tiles];
    let mut full_num = vec![0i32; bsz * tiles];
    let mut full_idx = vec![0i32; bsz * tiles * tiles];
    for r in 0..bsz * tiles {
        let cls = &classes[r * tiles..(r + 1) * tiles];
        num[r] = order(cls, 1, &mut idx[r * tiles..(r + 1) * tiles]);
        full_num[r] = order(cls, 2, &mut full_idx[r * tiles..(r + 1) * tiles]);
    }
    let (b, t) = (bsz as i64, tiles as i64);
    let make = |v: &[i32], shape: &[i64]| -> Result<Tensor> {
        let t = Tensor::f_from_slice(v)?.f_reshape(shape)?;
        if layout.device == Device::Cpu {
            Ok(t)
        } else {
            Ok(t.f_to_device(layout.device)?)
        }
    };
    Ok([
        make(&num, &[b, 1, t])?,
        make(&idx, &[b, 1, t, t])?,
        make(&full_num, &[b, 1, t])?,
        make(&full_idx, &[b, 1, t, t])?,
    ])
}

/// Writes the tiles of class `want` first, then the others, each in increasing order.
fn order(cls: &[u8], want: u8, out: &mut [i32]) -> i32 {
    let mut k = 0;
    for (t, &c) in cls.iter().enumerate() {
        if c == want {
            out[k] = t as i32;
            k += 1;
        }
    }
    let n = k as i32;
    for (t, &c) in cls.iter().enumerate() {
        if c != want {
            out[k] = t as i32;
            k += 1;
        }
    }
    n
}

fn classify_q_tile(
    layout: &Layout,
    prefix: &[u32],
    b: usize,
    qt: usize,
    bs: usize,
    cls: &mut [u8],
) {
    let l = layout.len;
    let tiles = cls.len();
    let (qs, qe) = (qt * bs, ((qt + 1) * bs).min(l));
    if qs >= l {
        return; // L = 0: one empty tile
    }
    let count = |a: usize, z: usize| -> u32 {
        if a >= z {
            0
        } else {
            prefix[z] - prefix[a]
        }
    };
    // Per kv tile: the fewest allowed keys over the tile's rows, and whether any is allowed.
    let mut fewest = vec![u32::MAX; tiles];
    let mut any = vec![false; tiles];
    for i in qs..qe {
        let last = i / bs;
        if !layout.is_real(b, i) {
            any[last] = true;
            for (t, f) in fewest.iter_mut().enumerate() {
                *f = (*f).min(u32::from(t == last));
            }
            continue;
        }
        let mut forbidden = [(0usize, 0usize); super::parse::MAX_DEPTH];
        let mut n = 0;
        for iv in layout.forbidden(b, i) {
            forbidden[n] = iv;
            n += 1;
        }
        for t in 0..=last {
            let (ks, ke) = (t * bs, ((t + 1) * bs).min(l));
            let top = ke.min(i + 1);
            let mut c = count(ks, top);
            for &(lo, hi) in &forbidden[..n] {
                c -= count(lo.max(ks), hi.min(top));
            }
            fewest[t] = fewest[t].min(c);
            any[t] |= c > 0;
        }
        for f in &mut fewest[last + 1..] {
            *f = 0;
        }
    }
    let rows_complete = qe - qs == bs;
    for t in 0..tiles {
        let keys_complete = (t + 1) * bs <= l;
        cls[t] = if !any[t] {
            0
        } else if rows_complete && keys_complete && fewest[t] as usize == bs {
            2
        } else {
            1
        };
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::structure::batch::{parse_parallel, OnError, ResponseStart};
    use crate::structure::ParallelTags;

    fn layout(ids: &[i64], rows: i64, real: Option<&[bool]>, path: TensorPath) -> Layout {
        let tags = ParallelTags::new(1, 2, 3, 4, 5, 6).unwrap();
        let t = Tensor::from_slice(ids).reshape([rows, -1]);
        let m = real.map(|r| Tensor::from_slice(r).reshape([rows, -1]));
        parse_parallel(
            &t,
            &tags,
            m.as_ref(),
            &ResponseStart::Zero,
            OnError::Causal,
            true,
            path,
        )
        .unwrap()
        .0
    }

    fn dense_vec(t: &Tensor) -> Vec<bool> {
        let t = t.contiguous();
        tensor::cpu_slice::<bool>(&t, "t").unwrap().to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Dense masks (both paths) and tile tables agree with the pairwise rule.
        #[test]
        fn views_follow_the_rule(
            ids in prop::collection::vec(prop_oneof![1i64..7, Just(9i64), Just(9i64)], 1..40),
            rows in 1usize..3,
            pads in prop::collection::vec(any::<bool>(), 120),
            bs in 1i64..9,
        ) {
            let l = ids.len();
            let all: Vec<i64> = (0..rows).flat_map(|r| ids.iter().map(move |&t| if r == 1 { 9 } else { t })).collect();
            let real: Vec<bool> = pads[..rows * l].iter().map(|&p| !p || l < 3).collect();
            let cpu = layout(&all, rows as i64, Some(&real), TensorPath::Cpu);
            let dev = layout(&all, rows as i64, Some(&real), TensorPath::Device);
            let a = dense_vec(&dense_mask(&cpu, MaskKind::Bool, DEFAULT_MAX_BYTES).unwrap());
            let b = dense_vec(&dense_mask(&dev, MaskKind::Bool, DEFAULT_MAX_BYTES).unwrap());
            prop_assert_eq!(&a, &b);
            for r in 0..rows {
                for i in 0..l {
                    for j in 0..l {
                        prop_assert_eq!(a[(r * l + i) * l + j], cpu.allowed(r, i, j), "{} {} {}", r, i, j);
                    }
                }
            }
            let [num, idx, full_num, full_idx] = block_tables(&cpu, bs).unwrap();
            let bsz = bs as usize;
            let tiles = l.div_ceil(bsz);
            for r in 0..rows {
                for qt in 0..tiles {
                    let mut partial = vec![];
                    let mut full = vec![];
                    for kt in 0..tiles {
                        let mut count = 0;
                        for i in qt * bsz..(qt + 1) * bsz {
                            for j in kt * bsz..(kt + 1) * bsz {
                                if i < l && j < l && a[(r * l + i) * l + j] {
                                    count += 1;
                                }
                            }
                        }
                        if count == bsz * bsz {
                            full.push(kt as i64);
                        } else if count > 0 {
                            partial.push(kt as i64);
                        }
                    }
                    let at = |t: &Tensor, k: usize| t.int64_value(&[r as i64, 0, qt as i64, k as i64]);
                    prop_assert_eq!(num.int64_value(&[r as i64, 0, qt as i64]), partial.len() as i64);
                    prop_assert_eq!(full_num.int64_value(&[r as i64, 0, qt as i64]), full.len() as i64);
                    for (k, &want) in partial.iter().enumerate() {
                        prop_assert_eq!(at(&idx, k), want);
                    }
                    for (k, &want) in full.iter().enumerate() {
                        prop_assert_eq!(at(&full_idx, k), want);
                    }
                }
            }
        }
    }

    #[test]
    fn additive_and_budget() {
        // x P A x a A y a p
        let ids = [9, 1, 3, 9, 4, 3, 9, 4, 2];
        let cpu = layout(&ids, 1, None, TensorPath::Cpu);
        let dev = layout(&ids, 1, None, TensorPath::Device);
        for kind in [Kind::Float, Kind::Double, Kind::BFloat16, Kind::Half] {
            let a = dense_mask(&cpu, MaskKind::Additive(kind), DEFAULT_MAX_BYTES).unwrap();
            let b = dense_mask(&dev, MaskKind::Additive(kind), DEFAULT_MAX_BYTES).unwrap();
            assert!(a.equal(&b), "{kind:?}");
            assert_eq!(a.double_value(&[0, 0, 5, 3]), lowest(kind));
            assert_eq!(a.double_value(&[0, 0, 5, 1]), 0.0);
        }
        assert!(matches!(
            dense_mask(&cpu, MaskKind::Bool, 80),
            Err(Error::Value(m)) if m.expected.contains("block_mask")
        ));
        assert!(dense_mask(&cpu, MaskKind::Bool, 81).is_ok());
        assert!(MaskKind::parse("additive", Some("int32")).is_err());
        assert!(MaskKind::parse("bool", Some("float32")).is_err());
        assert!(block_tables(&cpu, 0).is_err());
        let (lo, hi, d) = interval_arrays(&cpu);
        assert_eq!(d, 1);
        assert_eq!((lo[6], hi[6]), (2, 5)); // token 6 (path 2) must not see 2..5
        assert_eq!((lo[3], hi[3]), (0, 0));
    }
}
