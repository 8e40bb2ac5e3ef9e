//! Bindings for `crate::rl` (`r1kit.rl` wraps them).

use pyo3::prelude::*;

use super::args;
use super::tensor::{path_arg, tensor_arg, to_python};
use crate::rl::advantages::{self, Outcome, Singleton};
use crate::rl::masked;

type Pair<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// Extracts the tensors of an outcome estimator and runs it without the GIL.
fn run_outcome<'py>(
    py: Python<'py>,
    estimator: Outcome,
    token_level_rewards: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    group_ids: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let r = tensor_arg(token_level_rewards, "token_level_rewards")?;
    let m = tensor_arg(response_mask, "response_mask")?;
    let g = tensor_arg(group_ids, "group_ids")?;
    let path = path_arg(path)?;
    let out = py.detach(move || advantages::outcome(&r, &m, &g, estimator, path))?;
    pair(py, out)
}

fn pair<'py>(py: Python<'py>, (a, b): (tch::Tensor, tch::Tensor)) -> PyResult<Pair<'py>> {
    Ok((to_python(py, a)?, to_python(py, b)?))
}

#[pyfunction]
pub fn masked_mean<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    mask: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let (x, m) = (tensor_arg(values, "values")?, tensor_arg(mask, "mask")?);
    let out = py.detach(move || masked::masked_mean(&x, &m))?;
    to_python(py, out)
}

#[pyfunction]
pub fn masked_var<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    mask: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let (x, m) = (tensor_arg(values, "values")?, tensor_arg(mask, "mask")?);
    let out = py.detach(move || masked::masked_var(&x, &m))?;
    to_python(py, out)
}

#[pyfunction]
#[pyo3(signature = (values, mask, path = None))]
pub fn masked_whiten<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    mask: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (x, m, path) = (
        tensor_arg(values, "values")?,
        tensor_arg(mask, "mask")?,
        path_arg(path)?,
    );
    let out = py.detach(move || masked::masked_whiten(&x, &m, path))?;
    to_python(py, out)
}

#[pyfunction]
#[pyo3(signature = (token_level_rewards, values, response_mask, gamma, lam, path = None))]
pub fn gae<'py>(
    py: Python<'py>,
    token_level_rewards: &Bound<'py, PyAny>,
    values: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    gamma: &Bound<'py, PyAny>,
    lam: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let r = tensor_arg(token_level_rewards, "token_level_rewards")?;
    let v = tensor_arg(values, "values")?;
    let m = tensor_arg(response_mask, "response_mask")?;
    let (gamma, lam) = (args::float(gamma, "gamma")?, args::float(lam, "lam")?);
    let path = path_arg(path)?;
    let out = py.detach(move || advantages::gae(&r, &v, &m, gamma, lam, path))?;
    pair(py, out)
}

#[pyfunction]
#[pyo3(signature = (token_level_rewards, response_mask, gamma, path = None))]
pub fn reinforce_plus_plus<'py>(
    py: Python<'py>,
    token_level_rewards: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    gamma: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let r = tensor_arg(token_level_rewards, "token_level_rewards")?;
    let m = tensor_arg(response_mask, "response_mask")?;
    let gamma = args::float(gamma, "gamma")?;
    let path = path_arg(path)?;
    let out = py.detach(move || advantages::reinforce_plus_plus(&r, &m, gamma, path))?;
    pair(py, out)
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (token_level_rewards, response_mask, group_ids, norm_by_std, epsilon, singleton, path = None))]
pub fn grpo<'py>(
    py: Python<'py>,
    token_level_rewards: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    group_ids: &Bound<'py, PyAny>,
    norm_by_std: bool,
    epsilon: &Bound<'py, PyAny>,
    singleton: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let estimator = Outcome::Grpo {
        norm_by_std,
        epsilon: args::float(epsilon, "epsilon")?,
        singleton: Singleton::parse(&args::string(singleton, "singleton")?)?,
    };
    run_outcome(
        py,
        estimator,
        token_level_rewards,
        response_mask,
        group_ids,
        path,
    )
}

#[pyfunction]
#[pyo3(signature = (token_level_rewards, response_mask, group_ids, singleton, path = None))]
pub fn rloo<'py>(
    py: Python<'py>,
    token_level_rewards: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    group_ids: &Bound<'py, PyAny>,
    singleton: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let estimator = Outcome::Rloo {
        singleton: Singleton::parse(&args::string(singleton, "singleton")?)?,
    };
    run_outcome(
        py,
        estimator,
        token_level_rewards,
        response_mask,
        group_ids,
        path,
    )
}

/// Group-baseline estimators without options: "opo", "gpg", "reinforce_plus_plus_baseline".
#[pyfunction]
#[pyo3(signature = (estimator, token_level_rewards, response_mask, group_ids, path = None))]
pub fn outcome<'py>(
    py: Python<'py>,
    estimator: &Bound<'py, PyAny>,
    token_level_rewards: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    group_ids: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let estimator = match args::string(estimator, "estimator")?.as_str() {
        "opo" => Outcome::Opo,
        "gpg" => Outcome::Gpg,
        "reinforce_plus_plus_baseline" => Outcome::ReinforcePlusPlusBaseline,
        other => {
            return Err(crate::Error::value(
                "estimator",
                "one of 'opo', 'gpg', 'reinforce_plus_plus_baseline'",
                format!("{other:?}"),
            )
            .into())
        }
    };
    run_outcome(
        py,
        estimator,
        token_level_rewards,
        response_mask,
        group_ids,
        path,
    )
}

#[pyfunction]
#[pyo3(signature = (token_level_rewards, response_mask, reward_baselines, path = None))]
pub fn remax<'py>(
    py: Python<'py>,
    token_level_rewards: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    reward_baselines: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let r = tensor_arg(token_level_rewards, "token_level_rewards")?;
    let m = tensor_arg(response_mask, "response_mask")?;
    let b = tensor_arg(reward_baselines, "reward_baselines")?;
    let path = path_arg(path)?;
    let out = py.detach(move || advantages::remax(&r, &m, &b, path))?;
    pair(py, out)
}
