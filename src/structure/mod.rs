//! Parallel-thinking structure: parse, position ids, attention masks, FlexAttention tile tables.
//!
//! Spec: `shared/spec/structure.md` (one definition for SFT, RL and rollout).
//!
//! # Rust API for token-level checks (rewards, filters)
//!
//! ```
//! use r1kit::structure::{parse_row, ParallelTags, StatusKind};
//!
//! // <Parallel>=1 </Parallel>=2 <Path>=3 </Path>=4 <Summary>=5 </Summary>=6
//! let tags = ParallelTags::new(1, 2, 3, 4, 5, 6).unwrap();
//! let ids = [9, 1, 3, 9, 4, 3, 9, 9, 4, 2, 5, 9, 6];
//! let row = parse_row(&ids, &tags);
//! assert_eq!(row.status.kind, StatusKind::Ok);
//! let block = &row.blocks[0];
//! assert_eq!((block.start, block.end), (1, Some(9)));
//! assert_eq!(block.paths.len(), 2);
//! assert_eq!((block.paths[1].start, block.paths[1].close, block.paths[1].end), (5, Some(8), 9));
//! let summary = block.summary.unwrap(); // layout A: the summary after `</Parallel>`
//! assert_eq!((summary.start, summary.close, block.summary_inside), (10, Some(12), false));
//! ```
//!
//! - [`ParallelTags::new`]`(parallel, parallel_end, path, path_end, summary, summary_end)`:
//!   the six tag ids (distinct, non-negative; errors name the argument).
//! - [`parse_row`]`(ids, &tags) -> RowParse`: a whole row with no pads, response from index 0.
//!   [`parse_row_into`] adds pads (`real`), `response_start` and writes the per-token arrays
//!   (positions, innermost block / path / depth, path node) into caller slices.
//! - [`RowParse`]: `status` ([`Status`]: [`StatusKind`] `ok | truncated | stray_close |
//!   path_outside_block | summary_in_path | too_deep | single_path` and the token index),
//!   `blocks` ([`Block`]: `start` / `end` token indices of `<Parallel>` / `</Parallel>`, `depth`,
//!   `parent`, `paths` as [`PathSpan`] `{start, close, end}`, `summary` as [`SummarySpan`]
//!   `{start, close}` with `summary_inside` telling layout B from layout A), `causal_from` (where
//!   a structural error made the row plain text), `is_ok()`, `top_level_blocks()`,
//!   `block_start_fractions()`, `tokens_in_paths`.
//!
//! Spans are token indices into the row. After a structural error `blocks` holds only the blocks
//! before the fallback point (the spec's "treated as plain causal text"); `status` still names the
//! error, so `row.is_ok()` is the validity check for a format reward.
//!
//! # Batch layer
//! [`batch::parse_parallel`] parses `[B, L]` tensors (rayon over rows; CUDA ids are copied to the
//! host once) into a [`batch::Layout`] plus the per-token tensors; [`mask`] turns a layout into
//! dense masks (raw-memory fill, or tch ops on the layout's device), per-token forbidden
//! intervals for a FlexAttention `mask_mod`, and the FlexAttention tile tables.

pub mod batch;
pub mod mask;
pub mod parse;
pub mod tags;

pub use parse::{
    parse_row, parse_row_into, Block, IdRun, IdsOut, PathNode, PathSpan, RowParse, Status,
    StatusKind, SummarySpan, TokenArrays, TokenSlices, MAX_DEPTH,
};
pub use tags::{ParallelTags, Tag, TAG_NAMES};

#[cfg(test)]
mod parse_tests;
