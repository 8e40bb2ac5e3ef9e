//! Bindings for `crate::rl` (`r1kit.rl` wraps them).

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use super::args;
use super::tensor::{path_arg, tensor_arg, to_python};
use crate::rl::advantages::{self, Outcome, Singleton};
use crate::rl::kl::{self, KlKind};
use crate::rl::loss::{self, AggMode, PolicyKind, PolicyLoss};
use crate::rl::{entropy, masked};

type Pair<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// Dense group ids (0, 1, ... in order of first appearance) of a sequence of hashables, with
/// Python's own equality (hash, then `is` or `==`): verl's uid strings without a Python loop.
/// Runs of the same object (a repeated uid) skip the hashing.
#[pyfunction]
pub fn dense_group_ids<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(out) = dense_str_ids(ids) {
        let t = tch::Tensor::f_from_slice(&out).map_err(crate::error::Error::from)?;
        return to_python(py, t);
    }
    let mut firsts: Vec<Bound<'py, PyAny>> = Vec::new();
    let mut by_hash: std::collections::HashMap<isize, Vec<usize>> =
        std::collections::HashMap::new();
    let mut out: Vec<i64> = Vec::with_capacity(ids.len().unwrap_or(0));
    let mut last: Option<(*mut pyo3::ffi::PyObject, i64)> = None;
    for item in ids.try_iter()? {
        let item = item?;
        let ptr = item.as_ptr();
        if let Some((p, id)) = last {
            if p == ptr {
                out.push(id);
                continue;
            }
        }
        let candidates = by_hash.entry(item.hash()?).or_default();
        let mut group = None;
        for &g in candidates.iter() {
            let first = &firsts[g];
            if first.as_ptr() == ptr || first.eq(&item)? {
                group = Some(g);
                break;
            }
        }
        let g = match group {
            Some(g) => g,
            None => {
                candidates.push(firsts.len());
                firsts.push(item);
                firsts.len() - 1
            }
        };
        out.push(g as i64);
        last = Some((ptr, g as i64));
    }
    let t = tch::Tensor::f_from_slice(&out).map_err(crate::error::Error::from)?;
    to_python(py, t)
}

/// [`dense_group_ids`] for a list of exact `str` objects (verl's uids), on their UTF-8 bytes:
/// Python's `str` equality is equality of the text, so this gives the same groups without a
/// Python-level hash and comparison per row. `None` for anything else (other sequences, other
/// types, subclasses with their own `__eq__`, strings that are not valid UTF-8).
fn dense_str_ids(ids: &Bound<'_, PyAny>) -> Option<Vec<i64>> {
    let list = ids.cast::<PyList>().ok()?;
    let items: Vec<Bound<'_, PyAny>> = list.iter().collect();
    let mut texts: Vec<&str> = Vec::with_capacity(items.len());
    for item in &items {
        let s = item.cast_exact::<PyString>().ok()?;
        texts.push(s.to_str().ok()?);
    }
    let mut seen: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(texts.len());
    let mut last: Option<(&str, i64)> = None;
    for t in texts {
        let id = match last {
            // A group's rows side by side (verl repeats each uid n times): equal text, equal
            // group, no hashing.
            Some((l, id)) if l == t => id,
            _ => {
                let next = seen.len() as i64;
                *seen.entry(t).or_insert(next)
            }
        };
        out.push(id);
        last = Some((t, id));
    }
    Some(out)
}

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
#[pyo3(signature = (values, mask, path = None))]
pub fn masked_mean<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    mask: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (x, m) = (tensor_arg(values, "values")?, tensor_arg(mask, "mask")?);
    let path = path_arg(path)?;
    let out = py.detach(move || masked::masked_mean(&x, &m, path))?;
    to_python(py, out)
}

#[pyfunction]
#[pyo3(signature = (values, mask, path = None))]
pub fn masked_var<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    mask: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (x, m) = (tensor_arg(values, "values")?, tensor_arg(mask, "mask")?);
    let path = path_arg(path)?;
    let out = py.detach(move || masked::masked_var(&x, &m, path))?;
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

/// "cpu" or "device": the implementation a call with `path` takes for `tensor`.
#[pyfunction]
#[pyo3(signature = (tensor, path = None))]
pub fn _resolve_path(
    tensor: &Bound<'_, PyAny>,
    path: Option<&Bound<'_, PyAny>>,
) -> PyResult<&'static str> {
    let t = tensor_arg(tensor, "tensor")?;
    Ok(match path_arg(path)?.resolve(t.device())? {
        crate::tensor::TensorPath::Cpu => "cpu",
        _ => "device",
    })
}

#[pyfunction]
#[pyo3(signature = (token_level_rewards, response_mask, group_ids, norm_by_std, epsilon, path = None))]
pub fn grpo_passk<'py>(
    py: Python<'py>,
    token_level_rewards: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    group_ids: &Bound<'py, PyAny>,
    norm_by_std: bool,
    epsilon: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let estimator = Outcome::GrpoPassk {
        norm_by_std,
        epsilon: args::float(epsilon, "epsilon")?,
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
#[pyo3(signature = (log_prob, ref_log_prob, kind, path = None))]
pub fn kl_penalty<'py>(
    py: Python<'py>,
    log_prob: &Bound<'py, PyAny>,
    ref_log_prob: &Bound<'py, PyAny>,
    kind: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (lp, r) = (
        tensor_arg(log_prob, "log_prob")?,
        tensor_arg(ref_log_prob, "ref_log_prob")?,
    );
    let kind = KlKind::parse(&args::string(kind, "kind")?)?;
    let path = path_arg(path)?;
    let out = py.detach(move || kl::kl_penalty(&lp, &r, kind, path))?;
    to_python(py, out)
}

#[pyfunction]
#[pyo3(signature = (grad_output, log_prob, ref_log_prob, kind, path = None))]
pub fn kl_penalty_backward<'py>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    log_prob: &Bound<'py, PyAny>,
    ref_log_prob: &Bound<'py, PyAny>,
    kind: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let g = tensor_arg(grad_output, "grad_output")?;
    let (lp, r) = (
        tensor_arg(log_prob, "log_prob")?,
        tensor_arg(ref_log_prob, "ref_log_prob")?,
    );
    let kind = KlKind::parse(&args::string(kind, "kind")?)?;
    let path = path_arg(path)?;
    let out = py.detach(move || kl::kl_penalty_backward(&g, &lp, &r, kind, path))?;
    to_python(py, out)
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (token_level_scores, old_log_prob, ref_log_prob, response_mask, kind, beta, path = None))]
pub fn apply_kl_penalty<'py>(
    py: Python<'py>,
    token_level_scores: &Bound<'py, PyAny>,
    old_log_prob: &Bound<'py, PyAny>,
    ref_log_prob: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    kind: &Bound<'py, PyAny>,
    beta: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, f64)> {
    let s = tensor_arg(token_level_scores, "token_level_scores")?;
    let old = tensor_arg(old_log_prob, "old_log_prob")?;
    let r = tensor_arg(ref_log_prob, "ref_log_prob")?;
    let m = tensor_arg(response_mask, "response_mask")?;
    let kind = KlKind::parse(&args::string(kind, "kind")?)?;
    let beta = args::float(beta, "beta")?;
    let path = path_arg(path)?;
    let (out, kl) = py.detach(move || kl::apply_kl_penalty(&s, &old, &r, &m, kind, beta, path))?;
    Ok((to_python(py, out)?, kl))
}

/// Parses the policy-loss arguments shared by the forward and backward bindings.
fn loss_spec(
    kind: &Bound<'_, PyAny>,
    clip: [&Bound<'_, PyAny>; 3],
    agg: &Bound<'_, PyAny>,
    loss_scale_factor: Option<&Bound<'_, PyAny>>,
) -> PyResult<PolicyLoss> {
    let kind = PolicyKind::parse(&args::string(kind, "kind")?)?;
    let agg = agg_mode(agg, loss_scale_factor)?;
    Ok(PolicyLoss::new(
        kind,
        args::float(clip[0], "clip_ratio_low")?,
        args::float(clip[1], "clip_ratio_high")?,
        args::float(clip[2], "clip_ratio_c")?,
        agg,
    )?)
}

fn agg_mode(
    agg: &Bound<'_, PyAny>,
    loss_scale_factor: Option<&Bound<'_, PyAny>>,
) -> PyResult<AggMode> {
    let lsf = match loss_scale_factor {
        Some(v) if !v.is_none() => Some(args::float(v, "loss_scale_factor")?),
        _ => None,
    };
    Ok(AggMode::parse(&args::string(agg, "agg")?, lsf)?)
}

type LossOut<'py> = (
    Bound<'py, PyAny>,
    (f64, f64, f64),
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
);

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (kind, old_log_prob, log_prob, advantages, response_mask, clip_ratio_low, clip_ratio_high, clip_ratio_c, agg, loss_scale_factor = None, path = None))]
pub fn policy_loss<'py>(
    py: Python<'py>,
    kind: &Bound<'py, PyAny>,
    old_log_prob: &Bound<'py, PyAny>,
    log_prob: &Bound<'py, PyAny>,
    advantages: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    clip_ratio_low: &Bound<'py, PyAny>,
    clip_ratio_high: &Bound<'py, PyAny>,
    clip_ratio_c: &Bound<'py, PyAny>,
    agg: &Bound<'py, PyAny>,
    loss_scale_factor: Option<&Bound<'py, PyAny>>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<LossOut<'py>> {
    let spec = loss_spec(
        kind,
        [clip_ratio_low, clip_ratio_high, clip_ratio_c],
        agg,
        loss_scale_factor,
    )?;
    let old = tensor_arg(old_log_prob, "old_log_prob")?;
    let lp = tensor_arg(log_prob, "log_prob")?;
    let adv = tensor_arg(advantages, "advantages")?;
    let m = tensor_arg(response_mask, "response_mask")?;
    let path = path_arg(path)?;
    let f = py.detach(move || loss::policy_loss(spec, &old, &lp, &adv, &m, path))?;
    Ok((
        to_python(py, f.loss)?,
        (f.clipfrac, f.ppo_kl, f.clipfrac_lower),
        to_python(py, f.row_coef)?,
        to_python(py, f.row_seq)?,
    ))
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (kind, grad_output, old_log_prob, log_prob, advantages, response_mask, clip_ratio_low, clip_ratio_high, clip_ratio_c, agg, loss_scale_factor, row_coef, row_seq))]
pub fn policy_loss_backward<'py>(
    py: Python<'py>,
    kind: &Bound<'py, PyAny>,
    grad_output: &Bound<'py, PyAny>,
    old_log_prob: &Bound<'py, PyAny>,
    log_prob: &Bound<'py, PyAny>,
    advantages: &Bound<'py, PyAny>,
    response_mask: &Bound<'py, PyAny>,
    clip_ratio_low: &Bound<'py, PyAny>,
    clip_ratio_high: &Bound<'py, PyAny>,
    clip_ratio_c: &Bound<'py, PyAny>,
    agg: &Bound<'py, PyAny>,
    loss_scale_factor: Option<&Bound<'py, PyAny>>,
    row_coef: &Bound<'py, PyAny>,
    row_seq: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let spec = loss_spec(
        kind,
        [clip_ratio_low, clip_ratio_high, clip_ratio_c],
        agg,
        loss_scale_factor,
    )?;
    let g = args::float(grad_output, "grad_output")?;
    let old = tensor_arg(old_log_prob, "old_log_prob")?;
    let lp = tensor_arg(log_prob, "log_prob")?;
    let adv = tensor_arg(advantages, "advantages")?;
    let m = tensor_arg(response_mask, "response_mask")?;
    let (c, s) = (
        tensor_arg(row_coef, "row_coef")?,
        tensor_arg(row_seq, "row_seq")?,
    );
    let out =
        py.detach(move || loss::policy_loss_backward(spec, g, &old, &lp, &adv, &m, &c, &s))?;
    to_python(py, out)
}

#[pyfunction]
#[pyo3(signature = (loss_mat, loss_mask, mode, loss_scale_factor = None, path = None))]
pub fn agg_loss<'py>(
    py: Python<'py>,
    loss_mat: &Bound<'py, PyAny>,
    loss_mask: &Bound<'py, PyAny>,
    mode: &Bound<'py, PyAny>,
    loss_scale_factor: Option<&Bound<'py, PyAny>>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py>> {
    let mode = agg_mode(mode, loss_scale_factor)?;
    let (l, m) = (
        tensor_arg(loss_mat, "loss_mat")?,
        tensor_arg(loss_mask, "loss_mask")?,
    );
    let path = path_arg(path)?;
    let out = py.detach(move || loss::agg_loss(&l, &m, mode, path))?;
    pair(py, out)
}

#[pyfunction]
pub fn agg_loss_backward<'py>(
    py: Python<'py>,
    grad_output: &Bound<'py, PyAny>,
    loss_mat: &Bound<'py, PyAny>,
    loss_mask: &Bound<'py, PyAny>,
    row_coef: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let g = args::float(grad_output, "grad_output")?;
    let (l, m) = (
        tensor_arg(loss_mat, "loss_mat")?,
        tensor_arg(loss_mask, "loss_mask")?,
    );
    let c = tensor_arg(row_coef, "row_coef")?;
    let out = py.detach(move || loss::agg_loss_backward(g, &l, &m, &c))?;
    to_python(py, out)
}

#[pyfunction]
#[pyo3(signature = (logits, path = None))]
pub fn entropy_from_logits<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    path: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let l = tensor_arg(logits, "logits")?;
    let path = path_arg(path)?;
    let out = py.detach(move || entropy::entropy_from_logits(&l, path))?;
    to_python(py, out)
}

/// Registers the RL-math bindings.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dense_group_ids, m)?)?;
    m.add_function(wrap_pyfunction!(masked_mean, m)?)?;
    m.add_function(wrap_pyfunction!(masked_var, m)?)?;
    m.add_function(wrap_pyfunction!(masked_whiten, m)?)?;
    m.add_function(wrap_pyfunction!(gae, m)?)?;
    m.add_function(wrap_pyfunction!(reinforce_plus_plus, m)?)?;
    m.add_function(wrap_pyfunction!(grpo, m)?)?;
    m.add_function(wrap_pyfunction!(grpo_passk, m)?)?;
    m.add_function(wrap_pyfunction!(rloo, m)?)?;
    m.add_function(wrap_pyfunction!(outcome, m)?)?;
    m.add_function(wrap_pyfunction!(remax, m)?)?;
    m.add_function(wrap_pyfunction!(kl_penalty, m)?)?;
    m.add_function(wrap_pyfunction!(kl_penalty_backward, m)?)?;
    m.add_function(wrap_pyfunction!(apply_kl_penalty, m)?)?;
    m.add_function(wrap_pyfunction!(policy_loss, m)?)?;
    m.add_function(wrap_pyfunction!(policy_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(agg_loss, m)?)?;
    m.add_function(wrap_pyfunction!(agg_loss_backward, m)?)?;
    m.add_function(wrap_pyfunction!(entropy_from_logits, m)?)?;
    m.add_function(wrap_pyfunction!(_resolve_path, m)?)?;
    Ok(())
}
