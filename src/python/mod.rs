//! Python bindings (`r1kit._core`). Bindings only: extract arguments, release the GIL around the
//! core call, convert back. The core never sees pyo3.

mod args;
mod errors;
mod rewards;
mod rl;
mod schedule;
mod search;
mod structure;
mod tensor;

use pyo3::prelude::*;

/// Sets the size of r1kit's thread pool for this process (results never depend on it).
#[pyfunction]
fn set_num_threads(n: &Bound<'_, PyAny>) -> PyResult<()> {
    let n = args::int(n, "n")?;
    let n = usize::try_from(n)
        .map_err(|_| crate::Error::value("n", "a positive number of threads", n))?;
    Ok(crate::parallel::set_num_threads(n)?)
}

/// Number of threads in r1kit's pool for this process.
#[pyfunction]
fn get_num_threads() -> PyResult<usize> {
    Ok(crate::parallel::num_threads()?)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // torch must be imported (libtorch loaded, THPVariable registered) before any tensor crosses.
    m.py().import("torch")?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::_roundtrip, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::_tensor_info, m)?)?;
    m.add_function(wrap_pyfunction!(schedule::hash_key, m)?)?;
    m.add_class::<schedule::NoiseSchedule>()?;
    rl::register(m)?;
    structure::register(m)?;
    rewards::register(m)?;
    search::register(m)?;
    Ok(())
}
