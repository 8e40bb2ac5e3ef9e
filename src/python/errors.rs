//! Maps [`crate::Error`] onto the exception classes of `r1kit.errors`.
//!
//! The classes are defined in Python because each inherits both `R1KitError` and a builtin
//! (`ShapeError(R1KitError, ValueError)`), which pyo3's exception macros cannot express.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::error::Error;

fn class_name(e: &Error) -> &'static str {
    match e {
        Error::Value(_) => "ArgumentError",
        Error::Type(_) => "ArgumentTypeError",
        Error::Shape(_) => "ShapeError",
        Error::Dtype(_) => "DtypeError",
        Error::Device(_) => "DeviceError",
        Error::Structure(_) => "StructureError",
        Error::Torch(_) => "TorchError",
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        Python::attach(|py| {
            let class = py
                .import("r1kit.errors")
                .and_then(|m| m.getattr(class_name(&e)))
                .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
            match class {
                Ok(class) => PyErr::from_type(class, e.to_string()),
                // Only reachable if r1kit's Python package is broken; still raise something clear.
                Err(_) => PyValueError::new_err(e.to_string()),
            }
        })
    }
}
