//! `[B, L]` token id tensors -> a [`Layout`]: one parse per row (rows shared by the caller and the
//! pool), the per-token tensors, and the host-side structure every view (masks, tile tables,
//! stats) is built from.
//!
//! The parse is a left-to-right scan with a stack, sequential by nature, and reads O(B·L) ids; on
//! the device path the ids are copied to the host once (a few hundred KB for a 16 x 4096 batch),
//! parsed there, and the per-token tensors are copied back. The O(B·L²) views (dense masks) are
//! then built on the device with tch ops from O(B·L) arrays, so no L x L matrix ever crosses.

use std::sync::Mutex;

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use super::parse::{parse_row_into, IdRun, IdsOut, RowParse, StatusKind, TokenSlices};
use super::tags::ParallelTags;
use crate::error::{Error, Result};
use crate::tensor::{self, kind_name, shape_name, TensorPath};

/// What a structural error does (`on_error=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The row becomes plain causal text from the failing block on (the default).
    #[default]
    Causal,
    /// The call fails with [`Error::Structure`] naming the row, the index and the kind.
    Raise,
}

impl OnError {
    /// Parses `"causal"` / `"raise"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "causal" => Ok(OnError::Causal),
            "raise" => Ok(OnError::Raise),
            other => Err(Error::value(
                "on_error",
                "'causal' or 'raise'",
                format!("{other:?}"),
            )),
        }
    }
}

/// Where each row's response starts (`response_start=`).
#[derive(Debug, Default)]
pub enum ResponseStart {
    /// Every row's response starts at index 0.
    #[default]
    Zero,
    /// The same index for every row.
    All(i64),
    /// One index per row: an integer tensor of shape `[B]` (any device).
    PerRow(Tensor),
}

/// The parse of a batch, kept on the host: what every view is built from.
#[derive(Debug, Clone)]
pub struct Layout {
    /// One parse per row.
    pub rows: Vec<RowParse>,
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub len: usize,
    /// `real[b * len + i]`: token i of row b is not a pad. `None`: no attention mask was given.
    pub real: Option<Vec<bool>>,
    /// Per-token path node (see [`super::parse::TokenSlices::node`]), `batch * len`.
    pub node: Vec<i32>,
    /// Per row: the runs of innermost block / path / depth ([`Layout::id_tensors`]).
    pub id_runs: Vec<Vec<IdRun>>,
    /// False for the causal ("Seen") variant: sequential positions, causal masks.
    pub structured: bool,
    /// Device of the input ids (and of every tensor the views return).
    pub device: Device,
    /// The resolved path: [`TensorPath::Cpu`] or [`TensorPath::Device`].
    pub path: TensorPath,
}

/// The per-token tensors of a parse, `[B, L]` on the input's device.
pub struct TokenTensors {
    /// int64 position ids.
    pub position_ids: Tensor,
}

/// The per-token id tensors of [`Layout::id_tensors`], `[B, L]` int32 on the layout's device.
pub struct IdTensors {
    /// Innermost block id (row-local), -1 outside blocks and for pads.
    pub block_ids: Tensor,
    /// Path index in the innermost block, -1 where not in a path.
    pub path_ids: Tensor,
    /// Depth of the innermost block, -1 outside blocks and for pads.
    pub depth: Tensor,
}

impl Layout {
    /// Block, path and depth ids of every token, built from the runs the parse kept (the
    /// parse itself writes only positions and path nodes per token).
    pub fn id_tensors(&self) -> Result<IdTensors> {
        let (batch, len) = (self.batch, self.len);
        let shape = [batch as i64, len as i64];
        let mut blocks_t = tensor::empty_cpu::<i32>(&shape)?;
        let mut paths_t = tensor::empty_cpu::<i32>(&shape)?;
        let mut depth_t = tensor::empty_cpu::<i32>(&shape)?;
        if len > 0 {
            let blocks = tensor::cpu_slice_mut::<i32>(&mut blocks_t, "block_ids")?;
            let paths = tensor::cpu_slice_mut::<i32>(&mut paths_t, "path_ids")?;
            let depth = tensor::cpu_slice_mut::<i32>(&mut depth_t, "depth")?;
            let fill = |(((bl, pa), de), runs): IdRowOut<'_>| IdRun::fill(runs, bl, pa, de);
            if batch * len < PARALLEL_MIN_TOKENS {
                blocks
                    .chunks_mut(len)
                    .zip(paths.chunks_mut(len))
                    .zip(depth.chunks_mut(len))
                    .zip(&self.id_runs)
                    .for_each(fill);
            } else {
                crate::parallel::install(|| {
                    blocks
                        .par_chunks_mut(len)
                        .zip(paths.par_chunks_mut(len))
                        .zip(depth.par_chunks_mut(len))
                        .zip(self.id_runs.par_iter())
                        .for_each(fill)
                })?;
            }
        }
        Ok(IdTensors {
            block_ids: to_device(blocks_t, self.device)?,
            path_ids: to_device(paths_t, self.device)?,
            depth: to_device(depth_t, self.device)?,
        })
    }

    /// True when token `i` of row `b` is real.
    #[inline]
    pub fn is_real(&self, b: usize, i: usize) -> bool {
        self.real.as_ref().is_none_or(|r| r[b * self.len + i])
    }

    /// Row `b`'s real-token flags (`None`: all real).
    pub fn real_row(&self, b: usize) -> Option<&[bool]> {
        self.real
            .as_ref()
            .map(|r| &r[b * self.len..(b + 1) * self.len])
    }

    /// The forbidden key intervals of token `i` of row `b` (the earlier paths of each block it is
    /// in a path of), innermost first. Empty for the causal variant.
    pub fn forbidden(&self, b: usize, i: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let row = &self.rows[b];
        let mut n = if self.structured {
            self.node[b * self.len + i]
        } else {
            -1
        };
        std::iter::from_fn(move || {
            while n >= 0 {
                let p = row.nodes[n as usize];
                n = p.parent;
                if p.lo < p.hi {
                    return Some((p.lo, p.hi));
                }
            }
            None
        })
    }

    /// The spec's rule: may query `i` of row `b` attend key `j`?
    pub fn allowed(&self, b: usize, i: usize, j: usize) -> bool {
        if !self.is_real(b, i) {
            return i == j;
        }
        j <= i && self.is_real(b, j) && self.forbidden(b, i).all(|(lo, hi)| j < lo || j >= hi)
    }
}

/// Checks the inputs and parses every row (see `r1kit.parse_parallel`).
pub fn parse_parallel(
    input_ids: &Tensor,
    tags: &ParallelTags,
    attention_mask: Option<&Tensor>,
    response_start: &ResponseStart,
    on_error: OnError,
    structured: bool,
    path: TensorPath,
) -> Result<(Layout, TokenTensors)> {
    let kind = tensor::kind_of(input_ids, "input_ids")?;
    if !tensor::is_integer(kind) {
        return Err(Error::dtype(
            "input_ids",
            "an integer tensor of token ids",
            kind_name(kind),
        ));
    }
    let (batch, len) = match input_ids.size().as_slice() {
        [l] => (1, *l),
        [b, l] => (*b, *l),
        _ => {
            return Err(Error::shape(
                "input_ids",
                "a [B, L] or [L] tensor",
                format!("shape {}", shape_name(input_ids)),
            ))
        }
    };
    if batch == 0 {
        return Err(Error::shape(
            "input_ids",
            "at least one row",
            format!("shape {}", shape_name(input_ids)),
        ));
    }
    let device = input_ids.device();
    let path = path.resolve(device)?;
    let (batch, len) = (batch as usize, len as usize);
    let ids = host_i64(input_ids, "input_ids")?;

    let mask_src = match attention_mask {
        None => None,
        Some(m) => {
            if m.size() != input_ids.size() {
                return Err(Error::shape(
                    "attention_mask",
                    format!("the shape of input_ids, {}", shape_name(input_ids)),
                    format!("shape {}", shape_name(m)),
                ));
            }
            tensor::expect_device(m, "attention_mask", device)?;
            Some(HostMask::new(m)?)
        }
    };
    let starts = response_starts(response_start, batch, len)?;

    // Outputs are written in place into fresh CPU tensors: no torch op touches O(B·L) data on
    // the CPU path (torch's OpenMP workers would spin against r1kit's threads on small machines).
    let shape = [batch as i64, len as i64];
    let mut positions_t = tensor::empty_cpu::<i64>(&shape)?;
    let mut node = vec![-1i32; batch * len];
    let mut id_runs: Vec<Vec<IdRun>> = vec![Vec::new(); batch];
    // Real-token flags, converted row by row inside the parse (zeroed pages: calloc, no fill).
    let mut real_buf = vec![false; if mask_src.is_some() { batch * len } else { 0 }];
    let rows: Vec<Result<RowParse>> = if len == 0 {
        (0..batch)
            .map(|b| {
                let out = TokenSlices {
                    position_ids: &mut [],
                    ids: IdsOut::Dense {
                        block_ids: &mut [],
                        path_ids: &mut [],
                        depth: &mut [],
                    },
                    node: &mut [],
                };
                Ok(parse_row_into(&[], None, starts[b], tags, out))
            })
            .collect()
    } else {
        let positions = tensor::cpu_slice_mut::<i64>(&mut positions_t, "position_ids")?;
        let ids = ids.as_slice()?;
        let mask_ref = mask_src.as_ref().map(HostMask::values).transpose()?;
        let starts_ref = &starts;
        let parse_one = |b: usize, p: &mut [i64], out: RowOut<'_>, real_row: &mut [bool]| {
            let row_ids = &ids[b * len..(b + 1) * len];
            // An OR of the sign bits vectorises (done with the mask flags when there is a mask,
            // in the same pass); the index is only looked for when there is one.
            let signs = match mask_ref {
                Some(m) => m.fill_row(b * len, real_row, row_ids),
                None => row_ids.iter().fold(0i64, |acc, &t| acc | t),
            };
            if signs < 0 {
                let k = row_ids.iter().position(|&t| t < 0).unwrap_or(0);
                return Err(Error::value(
                    "input_ids",
                    "non-negative token ids",
                    format!("{} at row {b}, index {k}", row_ids[k]),
                ));
            }
            let row_real = mask_ref.map(|_| &*real_row);
            let (runs, no) = out;
            let slices = TokenSlices {
                position_ids: &mut *p,
                ids: IdsOut::Runs(runs),
                node: no,
            };
            let row = parse_row_into(row_ids, row_real, starts_ref[b], tags, slices);
            if !structured {
                let mut next = 0i64;
                for (i, pos) in p.iter_mut().enumerate() {
                    if row_real.is_none_or(|r| r[i]) {
                        *pos = next;
                        next += 1;
                    }
                }
            }
            Ok(row)
        };
        let real_len = if mask_ref.is_some() { len } else { 0 };
        if batch == 1 || batch * len < PARALLEL_MIN_TOKENS {
            // Small batches: waking the pool costs more than the parse.
            let mut real_rows = real_buf.chunks_mut(len.max(1));
            positions
                .chunks_mut(len)
                .zip(id_runs.iter_mut())
                .zip(node.chunks_mut(len))
                .enumerate()
                .map(|(b, ((p, runs), no))| {
                    let real_row = if real_len > 0 {
                        real_rows.next().unwrap_or_default()
                    } else {
                        &mut []
                    };
                    parse_one(b, p, (runs, no), real_row)
                })
                .collect()
        } else {
            let mut real_chunks = real_buf.chunks_mut(len);
            // One item per row, each with its own output slices; the caller starts at once and
            // pool threads join when they wake (see `parallel::for_each_item`).
            type RowSlices<'a> = (
                &'a mut [i64],
                &'a mut Vec<IdRun>,
                &'a mut [i32],
                &'a mut [bool],
            );
            let slots: Vec<Mutex<Option<RowSlices<'_>>>> = positions
                .chunks_mut(len)
                .zip(id_runs.iter_mut())
                .zip(node.chunks_mut(len))
                .map(|((p, runs), no)| {
                    let re = if real_len > 0 {
                        real_chunks.next().unwrap_or_default()
                    } else {
                        &mut []
                    };
                    Mutex::new(Some((p, runs, no, re)))
                })
                .collect();
            let results: Vec<Mutex<Option<Result<RowParse>>>> =
                (0..batch).map(|_| Mutex::new(None)).collect();
            crate::parallel::for_each_item(batch, &|b| {
                let taken = slots[b].lock().ok().and_then(|mut slot| slot.take());
                if let (Some((p, runs, no, re)), Ok(mut out)) = (taken, results[b].lock()) {
                    *out = Some(parse_one(b, p, (runs, no), re));
                }
            })?;
            results
                .into_iter()
                .map(|r| {
                    r.into_inner().ok().flatten().unwrap_or_else(|| {
                        Err(Error::Structure("internal: a row was not parsed".into()))
                    })
                })
                .collect()
        }
    };
    let rows = rows.into_iter().collect::<Result<Vec<RowParse>>>()?;
    if on_error == OnError::Raise {
        if let Some((b, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.status.kind.is_error())
        {
            return Err(Error::Structure(format!(
                "`input_ids` row {b}: {} at token {} ({})",
                row.status.kind.name(),
                row.status.index.unwrap_or(0),
                explain(row.status.kind)
            )));
        }
    }
    let tokens = TokenTensors {
        position_ids: to_device(positions_t, device)?,
    };
    let layout = Layout {
        rows,
        batch,
        len,
        real: mask_src.map(|_| real_buf),
        node,
        id_runs,
        structured,
        device,
        path,
    };
    Ok((layout, tokens))
}

/// What each structural error means, for messages.
pub fn explain(kind: StatusKind) -> &'static str {
    match kind {
        StatusKind::Ok => "well formed",
        StatusKind::Truncated => "the sequence ends inside an open block",
        StatusKind::StrayClose => "a </Path> or </Parallel> with nothing open to close",
        StatusKind::PathOutsideBlock => "a <Path> outside a block's path section",
        StatusKind::SummaryInPath => "a <Summary> inside an open path",
        StatusKind::TooDeep => "blocks nested deeper than 8",
        StatusKind::SinglePath => "a closed block with fewer than 2 paths",
    }
}

fn to_device(t: Tensor, device: Device) -> Result<Tensor> {
    if device == Device::Cpu {
        Ok(t)
    } else {
        Ok(t.f_to_device(device)?)
    }
}

/// Integer ids readable as `&[i64]` on the host: the caller's memory when it already is a
/// contiguous int64 CPU tensor, else one converted copy.
struct HostIds {
    tensor: Tensor,
    arg: &'static str,
}

impl HostIds {
    fn as_slice(&self) -> Result<&[i64]> {
        tensor::cpu_slice::<i64>(&self.tensor, self.arg)
    }
}

fn host_i64(t: &Tensor, arg: &'static str) -> Result<HostIds> {
    let host = if t.device() == Device::Cpu {
        t.shallow_clone()
    } else {
        t.f_to_device(Device::Cpu)?
    };
    let host = tensor::contiguous(&tensor::integer_as_i64(&host, arg)?);
    Ok(HostIds { tensor: host, arg })
}

/// One row's block, path and depth slices with the runs they are built from.
type IdRowOut<'a> = (
    ((&'a mut [i32], &'a mut [i32]), &'a mut [i32]),
    &'a Vec<IdRun>,
);

/// One row's id runs and node slice.
type RowOut<'a> = (&'a mut Vec<IdRun>, &'a mut [i32]);

/// Batches below this many tokens are parsed on the caller's thread.
const PARALLEL_MIN_TOKENS: usize = 1 << 15;

/// The attention mask on the host, read straight from its memory (nonzero = real token).
struct HostMask {
    tensor: Tensor,
}

impl HostMask {
    const ARG: &'static str = "attention_mask";

    fn new(t: &Tensor) -> Result<Self> {
        let kind = tensor::kind_of(t, Self::ARG)?;
        if !(tensor::is_integer(kind) || kind == Kind::Bool) {
            return Err(Error::dtype(
                Self::ARG,
                "a bool or integer tensor (1 = token, 0 = pad)",
                kind_name(kind),
            ));
        }
        let host = if t.device() == Device::Cpu {
            tensor::contiguous(t)
        } else {
            t.f_to_device(Device::Cpu)?.f_contiguous()?
        };
        Ok(HostMask { tensor: host })
    }

    /// The flags' memory, typed.
    fn values(&self) -> Result<MaskValues<'_>> {
        let (t, arg) = (&self.tensor, Self::ARG);
        Ok(match tensor::kind_of(t, arg)? {
            Kind::Bool => MaskValues::Bool(tensor::cpu_slice::<bool>(t, arg)?),
            Kind::Int64 => MaskValues::I64(tensor::cpu_slice::<i64>(t, arg)?),
            Kind::Int => MaskValues::I32(tensor::cpu_slice::<i32>(t, arg)?),
            Kind::Int16 => MaskValues::I16(tensor::cpu_slice::<i16>(t, arg)?),
            Kind::Int8 => MaskValues::I8(tensor::cpu_slice::<i8>(t, arg)?),
            Kind::Uint8 => MaskValues::U8(tensor::cpu_slice::<u8>(t, arg)?),
            other => {
                return Err(Error::dtype(
                    arg,
                    "a bool or integer tensor",
                    kind_name(other),
                ))
            }
        })
    }
}

/// An attention mask's host memory in its own dtype.
#[derive(Clone, Copy)]
enum MaskValues<'a> {
    Bool(&'a [bool]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    I16(&'a [i16]),
    I8(&'a [i8]),
    U8(&'a [u8]),
}

impl MaskValues<'_> {
    /// Writes the flags of elements `start..start + out.len()` into `out`; returns the OR of
    /// `ids` (negative when one is), computed in the same pass.
    fn fill_row(self, start: usize, out: &mut [bool], ids: &[i64]) -> i64 {
        fill_mask_row(self, start, out, ids)
    }
}

crate::simd::avx2_dispatch! {
    /// [`MaskValues::fill_row`], compiled for AVX2 where the CPU has it (64-bit compares).
    fn fill_mask_row(mask: MaskValues<'_>, start: usize, out: &mut [bool], ids: &[i64]) -> i64
        => fill_mask_row_body
}

#[inline(always)]
fn fill_mask_row_body(mask: MaskValues<'_>, start: usize, out: &mut [bool], ids: &[i64]) -> i64 {
    #[inline(always)]
    fn nonzero<T: Copy + Default + PartialEq>(src: &[T], out: &mut [bool], ids: &[i64]) -> i64 {
        let zero = T::default();
        let mut signs = 0i64;
        for ((o, &v), &id) in out.iter_mut().zip(src).zip(ids) {
            *o = v != zero;
            signs |= id;
        }
        signs
    }
    let end = start + out.len();
    match mask {
        MaskValues::Bool(v) => {
            out.copy_from_slice(&v[start..end]);
            ids.iter().fold(0i64, |acc, &t| acc | t)
        }
        MaskValues::I64(v) => nonzero(&v[start..end], out, ids),
        MaskValues::I32(v) => nonzero(&v[start..end], out, ids),
        MaskValues::I16(v) => nonzero(&v[start..end], out, ids),
        MaskValues::I8(v) => nonzero(&v[start..end], out, ids),
        MaskValues::U8(v) => nonzero(&v[start..end], out, ids),
    }
}

fn response_starts(rs: &ResponseStart, batch: usize, len: usize) -> Result<Vec<usize>> {
    let check = |v: i64, arg: &str| -> Result<usize> {
        if v < 0 || v as u64 > len as u64 {
            return Err(Error::value(
                arg,
                format!("an index in [0, {len}] (the row length)"),
                v,
            ));
        }
        Ok(v as usize)
    };
    match rs {
        ResponseStart::Zero => Ok(vec![0; batch]),
        ResponseStart::All(v) => Ok(vec![check(*v, "response_start")?; batch]),
        ResponseStart::PerRow(t) => {
            let kind = tensor::kind_of(t, "response_start")?;
            if !tensor::is_integer(kind) {
                return Err(Error::dtype(
                    "response_start",
                    "an int or an integer tensor",
                    kind_name(kind),
                ));
            }
            if t.dim() != 1 || t.size()[0] as usize != batch {
                return Err(Error::shape(
                    "response_start",
                    format!("an int or a [B] tensor with B = {batch}"),
                    format!("shape {}", shape_name(t)),
                ));
            }
            let values = host_i64(t, "response_start")?;
            values
                .as_slice()?
                .iter()
                .enumerate()
                .map(|(b, &v)| check(v, &format!("response_start[{b}]")))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_flags_of_the_baseline_and_avx2_copies_agree() {
        // Lengths around the vector widths; zeros and nonzeros (negative too) in every dtype.
        for n in [0usize, 1, 3, 4, 7, 8, 15, 16, 31, 33, 64, 100, 257] {
            let raw: Vec<i64> = (0..n as i64)
                .map(|i| [0, 1, 0, -2, 5, 0, 0, 1][(i * 7 % 8) as usize])
                .collect();
            let ids: Vec<i64> = (0..n as i64)
                .map(|i| if i == 5 { -1 } else { i * 3 })
                .collect();
            let b: Vec<bool> = raw.iter().map(|&v| v != 0).collect();
            let i32s: Vec<i32> = raw.iter().map(|&v| v as i32).collect();
            let i16s: Vec<i16> = raw.iter().map(|&v| v as i16).collect();
            let i8s: Vec<i8> = raw.iter().map(|&v| v as i8).collect();
            let u8s: Vec<u8> = raw.iter().map(|&v| v as u8).collect();
            let want: Vec<bool> = raw.iter().map(|&v| v != 0).collect();
            let want_signs = ids.iter().fold(0i64, |acc, &t| acc | t);
            for mask in [
                MaskValues::I64(&raw),
                MaskValues::I32(&i32s),
                MaskValues::I16(&i16s),
                MaskValues::I8(&i8s),
                MaskValues::U8(&u8s),
                MaskValues::Bool(&b),
            ] {
                let (mut got, mut base) = (vec![true; n], vec![true; n]);
                let signs = fill_mask_row(mask, 0, &mut got, &ids);
                let base_signs = fill_mask_row_body(mask, 0, &mut base, &ids);
                assert_eq!(got, want, "n = {n}");
                assert_eq!(base, want, "n = {n}");
                assert_eq!((signs, base_signs), (want_signs, want_signs), "n = {n}");
            }
        }
    }
}
