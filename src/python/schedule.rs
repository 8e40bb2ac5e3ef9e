//! Bindings for `crate::schedule` (`r1kit.curriculum` wraps them).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyList, PyString, PyTuple};
use tch::Tensor;

use super::args::{self, type_name};
use super::tensor::{int_tensor_arg, is_tensor, path_arg, tensor_arg, to_python};
use crate::error::{Error, Result};
use crate::schedule::{self, ScheduleKind, Turns};

/// The int64 key a string (or int) stands for in noise draws.
#[pyfunction]
pub fn hash_key(key: &Bound<'_, PyAny>) -> PyResult<i64> {
    Ok(key_value(key, || "key".to_string())?.1)
}

#[derive(PartialEq, Clone, Copy)]
enum KeyType {
    Int,
    Str,
}

/// One key's type and value; `arg` names it only when there is an error (keys can be millions).
fn key_value(item: &Bound<'_, PyAny>, arg: impl Fn() -> String) -> Result<(KeyType, i64)> {
    if let Ok(s) = item.cast::<PyString>() {
        let text = s
            .to_str()
            .map_err(|_| Error::value(arg(), "valid UTF-8 text", "a str with lone surrogates"))?;
        Ok((KeyType::Str, schedule::hash_key_str(text) as i64))
    } else if item.is_instance_of::<PyInt>() && !item.is_instance_of::<PyBool>() {
        if let Ok(v) = item.extract::<i64>() {
            return Ok((KeyType::Int, v));
        }
        Ok((KeyType::Int, args::int_bits(item, &arg())? as i64))
    } else {
        Err(Error::type_(arg(), "an int or a str key", type_name(item)))
    }
}

/// Keys as a 1-D tensor: a tensor as given, or a list/tuple of all-int or all-str keys (CPU).
fn keys_arg(obj: &Bound<'_, PyAny>) -> Result<Tensor> {
    if is_tensor(obj) {
        return tensor_arg(obj, "keys");
    }
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = obj.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Err(Error::type_(
            "keys",
            "a 1-D integer torch.Tensor or a list of int or str keys",
            type_name(obj),
        ));
    };
    let mut first: Option<KeyType> = None;
    let mut values = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = || format!("keys[{i}]");
        let (ty, value) = key_value(item, name)?;
        match first {
            None => first = Some(ty),
            Some(t) if t != ty => {
                let (want, got) = if t == KeyType::Int {
                    ("int", "str")
                } else {
                    ("str", "int")
                };
                return Err(Error::type_(
                    name(),
                    format!("keys of one type ({want}, like keys[0])"),
                    got,
                ));
            }
            Some(_) => {}
        }
        values.push(value);
    }
    Ok(Tensor::f_from_slice(&values)?)
}

/// ZeroSearch's curriculum noise schedule (Rust core of `r1kit.curriculum.NoiseSchedule`).
#[pyclass(module = "r1kit._core", name = "NoiseSchedule", frozen)]
pub struct NoiseSchedule {
    inner: schedule::NoiseSchedule,
}

#[pymethods]
impl NoiseSchedule {
    #[new]
    #[pyo3(signature = (start, end, total_steps, base = None, kind = None))]
    fn new(
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
        total_steps: &Bound<'_, PyAny>,
        base: Option<&Bound<'_, PyAny>>,
        kind: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let base = base.map_or(Ok(4.0), |b| args::float(b, "base"))?;
        let kind = match kind {
            None => ScheduleKind::Exponential,
            Some(k) => ScheduleKind::parse(&args::string(k, "kind")?)?,
        };
        let inner = schedule::NoiseSchedule::new(
            args::float(start, "start")?,
            args::float(end, "end")?,
            args::int(total_steps, "total_steps")?,
            base,
            kind,
        )?;
        Ok(Self { inner })
    }

    #[getter]
    fn start(&self) -> f64 {
        self.inner.start()
    }
    #[getter]
    fn end(&self) -> f64 {
        self.inner.end()
    }
    #[getter]
    fn total_steps(&self) -> i64 {
        self.inner.total_steps()
    }
    #[getter]
    fn base(&self) -> f64 {
        self.inner.base()
    }
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind().name()
    }

    fn probability(&self, step: &Bound<'_, PyAny>) -> PyResult<f64> {
        Ok(self.inner.probability(args::int(step, "step")?)?)
    }

    #[pyo3(signature = (steps, path = None))]
    fn probabilities<'py>(
        &self,
        py: Python<'py>,
        steps: &Bound<'py, PyAny>,
        path: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let steps = int_tensor_arg(steps, "steps")?;
        let path = path_arg(path)?;
        let inner = self.inner;
        let out = py.detach(move || inner.probabilities(&steps, path))?;
        to_python(py, out)
    }

    #[pyo3(signature = (step, keys, turns = None, seed = None, path = None))]
    fn draw_noisy<'py>(
        &self,
        py: Python<'py>,
        step: &Bound<'py, PyAny>,
        keys: &Bound<'py, PyAny>,
        turns: Option<&Bound<'py, PyAny>>,
        seed: Option<&Bound<'py, PyAny>>,
        path: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let step = args::int(step, "step")?;
        let keys = keys_arg(keys)?;
        let turns = match turns {
            Some(t) if !t.is_none() => {
                if t.is_instance_of::<PyInt>() {
                    Turns::All(args::int(t, "turns")?)
                } else {
                    let from_host = !is_tensor(t);
                    let t = int_tensor_arg(t, "turns")?;
                    // A list of turns follows the keys to their device; a tensor must already be there.
                    let t = if from_host {
                        t.f_to_device(keys.device()).map_err(Error::from)?
                    } else {
                        t
                    };
                    Turns::PerKey(t)
                }
            }
            _ => Turns::All(0),
        };
        let seed = seed.map_or(Ok(0), |s| args::int_bits(s, "seed"))?;
        let path = path_arg(path)?;
        let inner = self.inner;
        let out = py.detach(move || inner.draw_noisy(step, &keys, &turns, seed, path))?;
        to_python(py, out)
    }

    fn __repr__(&self) -> String {
        let s = &self.inner;
        format!(
            "NoiseSchedule(start={:?}, end={:?}, total_steps={}, base={:?}, kind='{}')",
            s.start(),
            s.end(),
            s.total_steps(),
            s.base(),
            s.kind().name()
        )
    }
}
