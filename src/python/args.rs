//! Scalar argument extraction that raises r1kit's errors, naming the argument.

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

use crate::error::{Error, Result};

/// Python type name of `obj` for messages (`str`, `torch.Tensor`).
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    let ty = obj.get_type();
    match (ty.module(), ty.name()) {
        (Ok(module), Ok(name)) if module != "builtins" => format!("{module}.{name}"),
        (_, Ok(name)) => name.to_string(),
        _ => "an unknown type".to_string(),
    }
}

/// A Python int (or any `__index__` integer such as numpy's, but not bool) as i64.
pub fn int(obj: &Bound<'_, PyAny>, arg: &str) -> Result<i64> {
    if obj.is_instance_of::<PyBool>() {
        return Err(Error::type_(arg, "an int", "bool"));
    }
    match obj.extract::<i64>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            Err(Error::value(arg, "an int that fits in 64 bits", obj))
        }
        Err(_) => Err(Error::type_(arg, "an int", type_name(obj))),
    }
}

/// A Python int as 64 raw bits: values in [-2^63, 2^64) are accepted (seeds, hashes).
pub fn int_bits(obj: &Bound<'_, PyAny>, arg: &str) -> Result<u64> {
    match int(obj, arg) {
        Ok(v) => Ok(v as u64),
        Err(Error::Value(_)) => obj
            .extract::<u64>()
            .map_err(|_| Error::value(arg, "an int in [-2**63, 2**64)", obj)),
        Err(e) => Err(e),
    }
}

/// A real number (int or float, not bool or str) as f64.
pub fn float(obj: &Bound<'_, PyAny>, arg: &str) -> Result<f64> {
    if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyString>() {
        return Err(Error::type_(arg, "a real number", type_name(obj)));
    }
    obj.extract::<f64>()
        .map_err(|_| Error::type_(arg, "a real number", type_name(obj)))
}

/// A str argument.
pub fn string(obj: &Bound<'_, PyAny>, arg: &str) -> Result<String> {
    obj.cast::<PyString>()
        .map_err(|_| Error::type_(arg, "a str", type_name(obj)))?
        .to_str()
        .map(str::to_owned)
        .map_err(|_| Error::value(arg, "valid UTF-8 text", "a str with lone surrogates"))
}
