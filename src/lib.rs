//! # r1kit
//!
//! Fast, exact hot loops for LLM reinforcement learning, with a Rust core on libtorch and Python
//! bindings (`r1kit._core`, behind the `python` feature).
//!
//! Areas:
//! - [`schedule`]: ZeroSearch's noise curriculum and deterministic noise draws.
//! - [`rl`]: masked statistics and advantage estimators (verl-identical).
//! - [`structure`]: Parallel-R1 thinking blocks: parse, position ids, attention masks.
//! - [`rewards`]: QA F1 / EM, math accuracy, Parallel-R1 format and reward recipes, from text
//!   or token ids.
//! - [`search`]: ZeroSearch's observation loss mask, from token ids or recorded spans.
//! - [`tensor`]: validation, raw CPU views and the CPU / device path switch shared by all areas.
//! - [`parallel`]: r1kit's fork-safe rayon pool (`R1KIT_NUM_THREADS`); `simd`: AVX2 dispatch of
//!   the hot loops.
//! - [`error`]: the crate's one error enum.

pub mod error;
pub mod parallel;
pub mod rewards;
pub mod rl;
pub mod schedule;
pub mod search;
mod simd;
pub mod structure;
pub mod tensor;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
