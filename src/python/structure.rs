//! Bindings for `crate::structure` (`r1kit.structure` wraps them).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::args;
use super::tensor::{is_tensor, path_arg, tensor_arg, to_python};
use crate::error::Error;
use crate::structure::batch::{self, Layout, OnError, ResponseStart};
use crate::structure::mask::{self, MaskKind};
use crate::structure::{ParallelTags, TAG_NAMES};

/// Registers the structure functions and class on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_parallel_tags, m)?)?;
    m.add_function(wrap_pyfunction!(parse_parallel, m)?)?;
    m.add_class::<ParallelLayoutCore>()?;
    Ok(())
}

fn tags_arg(tags: &Bound<'_, PyAny>) -> PyResult<ParallelTags> {
    let ids: Vec<Bound<'_, PyAny>> = tags
        .try_iter()
        .and_then(|it| it.collect::<PyResult<Vec<_>>>())
        .map_err(|_| {
            Error::type_(
                "tags",
                "a ParallelTags or 6 token ids",
                args::type_name(tags),
            )
        })?;
    if ids.len() != 6 {
        return Err(Error::value("tags", "6 token ids", format!("{} ids", ids.len())).into());
    }
    let mut v = [0i64; 6];
    for (k, item) in ids.iter().enumerate() {
        v[k] = args::int(item, TAG_NAMES[k])?;
    }
    Ok(ParallelTags::new(v[0], v[1], v[2], v[3], v[4], v[5])?)
}

/// Validates six tag ids (distinct, non-negative); raises naming the offending one.
#[pyfunction]
pub fn check_parallel_tags(tags: &Bound<'_, PyAny>) -> PyResult<()> {
    tags_arg(tags).map(|_| ())
}

type Parsed<'py> = (ParallelLayoutCore, Bound<'py, PyAny>);
type Pair3<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>);

/// Parses `[B, L]` ids; returns the layout and position_ids (block, path and depth ids come
/// from `ParallelLayoutCore.id_tensors`, on demand).
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (input_ids, tags, attention_mask = None, response_start = None, on_error = None, structured = true, path = None))]
pub fn parse_parallel<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    tags: &Bound<'py, PyAny>,
    attention_mask: Option<&Bound<'py, PyAny>>,
    response_start: Option<&Bound<'py, PyAny>>,
    on_error: Option<&Bound<'py, PyAny>>,
    structured: bool,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Parsed<'py>> {
    let ids = tensor_arg(input_ids, "input_ids")?;
    let tags = tags_arg(tags)?;
    let mask = match attention_mask {
        Some(m) if !m.is_none() => Some(tensor_arg(m, "attention_mask")?),
        _ => None,
    };
    let starts = match response_start {
        None => ResponseStart::Zero,
        Some(r) if r.is_none() => ResponseStart::Zero,
        Some(r) if is_tensor(r) => ResponseStart::PerRow(tensor_arg(r, "response_start")?),
        Some(r) => ResponseStart::All(args::int(r, "response_start")?),
    };
    let on_error = match on_error {
        Some(o) if !o.is_none() => OnError::parse(&args::string(o, "on_error")?)?,
        _ => OnError::Causal,
    };
    let path = path_arg(path)?;
    let (layout, t) = py.detach(move || {
        batch::parse_parallel(
            &ids,
            &tags,
            mask.as_ref(),
            &starts,
            on_error,
            structured,
            path,
        )
    })?;
    Ok((
        ParallelLayoutCore {
            inner: Arc::new(layout),
        },
        to_python(py, t.position_ids)?,
    ))
}

/// The host side of a parse: status, spans, stats, and the mask views.
#[pyclass(frozen, module = "r1kit._core")]
pub struct ParallelLayoutCore {
    inner: Arc<Layout>,
}

#[pymethods]
impl ParallelLayoutCore {
    /// Rows.
    #[getter]
    fn batch_size(&self) -> usize {
        self.inner.batch
    }

    /// Tokens per row.
    #[getter]
    fn seq_len(&self) -> usize {
        self.inner.len
    }

    /// False for the causal ("Seen") variant.
    #[getter]
    fn structured(&self) -> bool {
        self.inner.structured
    }

    /// `(block_ids, path_ids, depth)`: int32 `[B, L]` on the layout's device, built from the
    /// runs the parse kept.
    fn id_tensors<'py>(&self, py: Python<'py>) -> PyResult<Pair3<'py>> {
        let inner = Arc::clone(&self.inner);
        let t = py.detach(move || inner.id_tensors())?;
        Ok((
            to_python(py, t.block_ids)?,
            to_python(py, t.path_ids)?,
            to_python(py, t.depth)?,
        ))
    }

    /// Per row: (kind, index or None).
    fn status(&self) -> Vec<(&'static str, Option<usize>)> {
        self.inner
            .rows
            .iter()
            .map(|r| (r.status.kind.name(), r.status.index))
            .collect()
    }

    /// Per row: a dict of statistics.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for row in &self.inner.rows {
            let d = PyDict::new(py);
            d.set_item("status", row.status.kind.name())?;
            d.set_item("index", row.status.index)?;
            d.set_item("n_blocks", row.blocks.len())?;
            d.set_item("n_top_level_blocks", row.top_level_blocks())?;
            d.set_item(
                "paths_per_block",
                row.blocks.iter().map(|b| b.paths.len()).collect::<Vec<_>>(),
            )?;
            d.set_item(
                "block_depth",
                row.blocks.iter().map(|b| b.depth).collect::<Vec<_>>(),
            )?;
            d.set_item("tokens_in_paths", row.tokens_in_paths)?;
            d.set_item("response_tokens", row.response_tokens)?;
            d.set_item("block_start_fraction", row.block_start_fractions())?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Row `row`'s blocks as dicts of token indices.
    fn blocks<'py>(
        &self,
        py: Python<'py>,
        row: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let r = args::int(row, "row")?;
        let n = self.inner.batch;
        if r < 0 || r as u64 >= n as u64 {
            return Err(Error::value("row", format!("a row index in [0, {n})"), r).into());
        }
        let out = PyList::empty(py);
        for b in &self.inner.rows[r as usize].blocks {
            let d = PyDict::new(py);
            d.set_item("start", b.start)?;
            d.set_item("end", b.end)?;
            d.set_item("depth", b.depth)?;
            d.set_item("parent", b.parent)?;
            d.set_item(
                "paths",
                b.paths
                    .iter()
                    .map(|p| (p.start, p.close, p.end))
                    .collect::<Vec<_>>(),
            )?;
            d.set_item("summary", b.summary.map(|s| (s.start, s.close)))?;
            d.set_item("summary_inside", b.summary_inside)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Dense `[B, 1, L, L]` mask: kind "bool" or "additive" with a dtype name.
    #[pyo3(signature = (kind, dtype, max_bytes))]
    fn attention_mask<'py>(
        &self,
        py: Python<'py>,
        kind: &Bound<'py, PyAny>,
        dtype: Option<&Bound<'py, PyAny>>,
        max_bytes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind_name = args::string(kind, "kind")?;
        let dtype = match dtype {
            Some(d) if !d.is_none() => Some(args::string(d, "dtype")?),
            _ => None,
        };
        let kind = MaskKind::parse(&kind_name, dtype.as_deref())?;
        let max_bytes = args::int(max_bytes, "max_bytes")?;
        let max_bytes = u64::try_from(max_bytes)
            .map_err(|_| Error::value("max_bytes", "a non-negative byte count", max_bytes))?;
        let layout = Arc::clone(&self.inner);
        let out = py.detach(move || mask::dense_mask(&layout, kind, max_bytes))?;
        to_python(py, out)
    }

    /// FlexAttention tile tables (kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices).
    fn block_tables<'py>(
        &self,
        py: Python<'py>,
        block_size: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bs = args::int(block_size, "block_size")?;
        let layout = Arc::clone(&self.inner);
        let [a, b, c, d] = py.detach(move || mask::block_tables(&layout, bs))?;
        let items = [
            to_python(py, a)?,
            to_python(py, b)?,
            to_python(py, c)?,
            to_python(py, d)?,
        ];
        Ok(pyo3::types::PyTuple::new(py, items)?.into_any())
    }

    /// (real [B, L] bool, lo [B, L, D] int32, hi [B, L, D] int32) on the input's device.
    fn intervals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let layout = Arc::clone(&self.inner);
        let (r, lo, hi) = py.detach(move || mask::intervals(&layout))?;
        let items = [to_python(py, r)?, to_python(py, lo)?, to_python(py, hi)?];
        Ok(pyo3::types::PyTuple::new(py, items)?.into_any())
    }
}
