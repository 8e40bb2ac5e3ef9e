//! Entropy of categorical distributions given by logits over the last dimension.

use tch::{Kind, Tensor};

use super::float_kind_of;
use crate::error::{Error, Result};
use crate::tensor::{self, TensorPath};

/// `logsumexp(l) - sum(softmax(l) * l)` over the last dimension (verl's `entropy_from_logits`),
/// shape `logits.shape[:-1]`, in the logits' dtype (bf16/fp16 computed in float32).
///
/// Both paths compose libtorch's vectorised kernels (softmax, logsumexp); autograd records them.
/// Terms with probability exactly 0 (logits of `-inf`) contribute 0, where verl's `0 * -inf`
/// gives NaN.
pub fn entropy_from_logits(logits: &Tensor, path: TensorPath) -> Result<Tensor> {
    let kind = float_kind_of(logits, "logits")?;
    let size = logits.size();
    if size.is_empty() || size[size.len() - 1] == 0 {
        return Err(Error::shape(
            "logits",
            "a tensor [..., V] with V >= 1 classes in the last dimension",
            tensor::shape_name(logits),
        ));
    }
    let _ = path.resolve(logits.device())?;
    let compute = if kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    };
    let l = logits.f_to_kind(compute)?;
    let p = l.f_softmax(-1, compute)?;
    let pl = p.f_mul(&l)?.f_where_scalarother(&p.f_ne(0.0)?, 0.0)?;
    let out = l
        .f_logsumexp([-1], false)?
        .f_sub(&pl.f_sum_dim_intlist(-1, false, compute)?)?;
    Ok(out.f_to_kind(kind)?)
}
