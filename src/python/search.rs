//! Bindings for `crate::search` (`r1kit.search` wraps them).

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::args::{self, type_name};
use super::tensor::{path_arg, tensor_arg, to_python};
use crate::error::{Error, Result};
use crate::search::{self, ObservationTags};

/// The items of a list or tuple, or a type error naming `arg`.
fn items<'py>(
    obj: &Bound<'py, PyAny>,
    arg: &str,
    expected: &str,
) -> Result<Vec<Bound<'py, PyAny>>> {
    if let Ok(list) = obj.cast::<PyList>() {
        Ok(list.iter().collect())
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        Ok(tuple.iter().collect())
    } else {
        Err(Error::type_(arg, expected, type_name(obj)))
    }
}

/// A list (or tuple) of ints; None is the empty list.
fn int_list(obj: Option<&Bound<'_, PyAny>>, arg: &str) -> Result<Vec<i64>> {
    match obj {
        None => Ok(Vec::new()),
        Some(o) if o.is_none() => Ok(Vec::new()),
        Some(o) => items(o, arg, "a list of ints")?
            .iter()
            .enumerate()
            .map(|(i, item)| args::int(item, &format!("{arg}[{i}]")))
            .collect(),
    }
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (input_ids, info_open, info_close, attention_mask = None, before = None, after = None, path = None))]
pub fn observation_mask<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    info_open: &Bound<'py, PyAny>,
    info_close: &Bound<'py, PyAny>,
    attention_mask: Option<&Bound<'py, PyAny>>,
    before: Option<&Bound<'py, PyAny>>,
    after: Option<&Bound<'py, PyAny>>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let ids = tensor_arg(input_ids, "input_ids")?;
    let tags = ObservationTags::new(
        args::int(info_open, "info_open")?,
        args::int(info_close, "info_close")?,
        int_list(before, "before")?,
        int_list(after, "after")?,
    )?;
    let am = match attention_mask {
        Some(a) if !a.is_none() => Some(tensor_arg(a, "attention_mask")?),
        _ => None,
    };
    let path = path_arg(path)?;
    let out = py.detach(move || search::observation_mask(&ids, &tags, am.as_ref(), path))?;
    to_python(py, out)
}

#[pyfunction]
#[pyo3(signature = (lengths, width, spans))]
pub fn spans_mask<'py>(
    py: Python<'py>,
    lengths: &Bound<'py, PyAny>,
    width: &Bound<'py, PyAny>,
    spans: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let lengths = int_list(Some(lengths), "lengths")?;
    let width = args::int(width, "width")?;
    let spans = items(spans, "spans", "a list of (row, start, end) tuples")?
        .iter()
        .enumerate()
        .map(|(k, span)| {
            let arg = format!("spans[{k}]");
            let v = int_list(Some(span), &arg)?;
            match v[..] {
                [row, start, end] => Ok((row, start, end)),
                _ => Err(Error::value(
                    arg,
                    "a (row, start, end) triple",
                    format!("{} values", v.len()),
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let out = py.detach(move || search::spans_mask(&lengths, width, &spans))?;
    to_python(py, out)
}

/// Adds the search bindings to `r1kit._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(observation_mask, m)?)?;
    m.add_function(wrap_pyfunction!(spans_mask, m)?)?;
    Ok(())
}
