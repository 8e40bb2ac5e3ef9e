//! The torch.Tensor <-> tch::Tensor bridge: zero-copy both ways, errors instead of `None`.
//!
//! `tch::Tensor::pyobject_unpack` gives a new `at::Tensor` handle on the same `TensorImpl` (same
//! storage, same autograd metadata); `pyobject_wrap` does the reverse. Nothing is copied.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use tch::Tensor;

use super::args::{self, type_name};
use crate::error::{Error, Result};
use crate::tensor::TensorPath;

/// Borrows the `torch.Tensor` in `obj` as a tch tensor, or names `arg` in a type error.
pub fn tensor_arg(obj: &Bound<'_, PyAny>, arg: &str) -> Result<Tensor> {
    // SAFETY: `obj` is a live Python object (we hold a reference and the GIL); torch is imported in
    // module init, so THPVariable's type object exists for the check.
    let unpacked = unsafe { Tensor::pyobject_unpack(obj.as_ptr() as *mut tch::python::CPyObject) };
    match unpacked {
        Ok(Some(t)) => {
            check_supported(obj, arg)?;
            Ok(t)
        }
        Ok(None) => Err(Error::type_(arg, "a torch.Tensor", type_name(obj))),
        Err(e) => Err(e.into()),
    }
}

/// Refuses what r1kit's kernels cannot read: sparse or nested tensors, and devices other than
/// CPU and CUDA (tch reports meta tensors as MPS, so this is checked on the Python side).
fn check_supported(obj: &Bound<'_, PyAny>, arg: &str) -> Result<()> {
    // `attr(&["device", "type"])` is `str(obj.device.type)`.
    let attr = |path: &[&str]| -> Result<String> {
        let mut value = obj.clone();
        for name in path {
            value = value
                .getattr(*name)
                .map_err(|_| Error::type_(arg, "a torch.Tensor", type_name(obj)))?;
        }
        Ok(value.str().map(|s| s.to_string()).unwrap_or_default())
    };
    let device_type = attr(&["device", "type"])?;
    if device_type != "cpu" && device_type != "cuda" {
        return Err(Error::device(
            arg,
            "a CPU or CUDA tensor",
            format!("a tensor on {device_type}"),
        ));
    }
    let layout = attr(&["layout"])?;
    if layout != "torch.strided" {
        return Err(Error::type_(
            arg,
            "a dense (torch.strided) tensor",
            format!("layout {layout}"),
        ));
    }
    if attr(&["is_nested"])? == "True" {
        return Err(Error::type_(arg, "a dense tensor", "a nested tensor"));
    }
    Ok(())
}

/// True when `obj` is a torch.Tensor.
pub fn is_tensor(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: as in `tensor_arg`.
    matches!(
        unsafe { tch::python::pyobject_check(obj.as_ptr() as *mut tch::python::CPyObject) },
        Ok(true)
    )
}

/// Hands a tch tensor to Python as a `torch.Tensor` sharing its storage.
pub fn to_python(py: Python<'_>, t: Tensor) -> PyResult<Bound<'_, PyAny>> {
    let ptr = t.pyobject_wrap().map_err(Error::from)?;
    // SAFETY: THPVariable_Wrap returns a new reference or null with a Python error set.
    unsafe { Bound::from_owned_ptr_or_err(py, ptr as *mut pyo3::ffi::PyObject) }
}

/// An integer tensor argument given as a tensor, or as a list/tuple of ints (made a CPU tensor).
pub fn int_tensor_arg(obj: &Bound<'_, PyAny>, arg: &str) -> Result<Tensor> {
    if is_tensor(obj) {
        return tensor_arg(obj, arg);
    }
    let items = if let Ok(list) = obj.cast::<PyList>() {
        list.iter().collect::<Vec<_>>()
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        tuple.iter().collect::<Vec<_>>()
    } else {
        return Err(Error::type_(
            arg,
            "a torch.Tensor or a list of ints",
            type_name(obj),
        ));
    };
    let values = items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.extract::<i64>() {
            Ok(v)
                if !item.is_instance_of::<pyo3::types::PyBool>()
                    && item.is_instance_of::<pyo3::types::PyInt>() =>
            {
                Ok(v)
            }
            _ => args::int(item, &format!("{arg}[{i}]")),
        })
        .collect::<Result<Vec<i64>>>()?;
    Ok(Tensor::f_from_slice(&values)?)
}

/// The `path=` argument: None or "auto" | "cpu" | "device".
pub fn path_arg(obj: Option<&Bound<'_, PyAny>>) -> Result<TensorPath> {
    match obj {
        None => Ok(TensorPath::Auto),
        Some(o) if o.is_none() => Ok(TensorPath::Auto),
        Some(o) => TensorPath::parse(&args::string(o, "path")?),
    }
}

/// Passes a tensor through the bridge and back (tests use it to prove zero-copy).
#[pyfunction]
#[pyo3(signature = (tensor))]
pub fn _roundtrip<'py>(py: Python<'py>, tensor: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let t = tensor_arg(tensor, "tensor")?;
    to_python(py, t)
}

/// What the Rust side sees of a tensor: (shape, dtype, device, data address).
#[pyfunction]
#[pyo3(signature = (tensor))]
pub fn _tensor_info(tensor: &Bound<'_, PyAny>) -> PyResult<(Vec<i64>, String, String, usize)> {
    let t = tensor_arg(tensor, "tensor")?;
    let kind = crate::tensor::kind_of(&t, "tensor")?;
    Ok((
        t.size(),
        crate::tensor::kind_name(kind),
        crate::tensor::device_name(t.device()),
        t.data_ptr() as usize,
    ))
}
