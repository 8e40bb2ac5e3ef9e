//! One row of token ids -> blocks, paths, summaries, status and per-token arrays.
//!
//! The rules are `shared/spec/structure.md`; the comments below only add what the spec leaves to
//! the implementation:
//! - `</Path>` does not end a path's span (the next `<Path>`, in-block `<Summary>` or
//!   `</Parallel>` does); it is only checked (`stray_close` when no path is open) and recorded
//!   in [`PathSpan::close`]. A `<Path>` while a path is open, or `</Parallel>` while one is open,
//!   ends it without an error; [`PathSpan::close`] is `None` then, for callers (rewards) that
//!   want to be stricter.
//! - A `<Path>` after a block's in-block summary is `path_outside_block`: it would split the
//!   block's tail from its paths.
//! - A `<Summary>` in a block before any path starts the block's tail (the block then has no
//!   path and is `single_path` when it closes).
//! - `</Summary>` is never an error: it closes the open summary if there is one.
//! - A `<Parallel>` anywhere in the response opens a block nested in the innermost open one; its
//!   depth is the number of blocks open around it. Opening a block when [`MAX_DEPTH`] are open is
//!   `too_deep`.
//! - `truncated`'s index is one past the last real token of the row.

use super::tags::{ParallelTags, Tag};

/// Most blocks that may be open at once (a ninth nested `<Parallel>` is `too_deep`).
pub const MAX_DEPTH: usize = 8;

/// What the parse of a row found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusKind {
    /// Every block is closed and well formed.
    Ok,
    /// The row ends inside an open block or path; the prefix is valid and keeps its structure.
    Truncated,
    /// A `</Path>` or `</Parallel>` with nothing open to close.
    StrayClose,
    /// A `<Path>` outside any block (or after a block's in-block summary).
    PathOutsideBlock,
    /// A `<Summary>` while a path is open.
    SummaryInPath,
    /// A `<Parallel>` nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A closed block with fewer than 2 paths.
    SinglePath,
}

impl StatusKind {
    /// Every kind, in the order of their numeric codes ([`StatusKind::code`]).
    pub const ALL: [StatusKind; 7] = [
        StatusKind::Ok,
        StatusKind::Truncated,
        StatusKind::StrayClose,
        StatusKind::PathOutsideBlock,
        StatusKind::SummaryInPath,
        StatusKind::TooDeep,
        StatusKind::SinglePath,
    ];

    /// The spec's name: `ok`, `truncated`, `stray_close`, ...
    pub fn name(self) -> &'static str {
        match self {
            StatusKind::Ok => "ok",
            StatusKind::Truncated => "truncated",
            StatusKind::StrayClose => "stray_close",
            StatusKind::PathOutsideBlock => "path_outside_block",
            StatusKind::SummaryInPath => "summary_in_path",
            StatusKind::TooDeep => "too_deep",
            StatusKind::SinglePath => "single_path",
        }
    }

    /// Position in [`StatusKind::ALL`] (stable: used in status tensors).
    pub fn code(self) -> i32 {
        StatusKind::ALL.iter().position(|&k| k == self).unwrap_or(0) as i32
    }

    /// True for the structural errors (everything but `ok` and `truncated`).
    pub fn is_error(self) -> bool {
        !matches!(self, StatusKind::Ok | StatusKind::Truncated)
    }
}

/// A row's status: its kind and the token index where it was found (`None` for `ok`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// What was found.
    pub kind: StatusKind,
    /// Token index of the offending token; for `truncated`, one past the last real token.
    pub index: Option<usize>,
}

/// One path of a block: token indices into the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSpan {
    /// Index of its `<Path>`.
    pub start: usize,
    /// Index of its `</Path>`, if the path was closed explicitly.
    pub close: Option<usize>,
    /// One past its last token (the next `<Path>`, in-block `<Summary>`, `</Parallel>`, or the end
    /// of the row for a truncated block). Tokens after `</Path>` up to here belong to the path.
    pub end: usize,
}

/// A `<Summary> ... </Summary>` span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummarySpan {
    /// Index of its `<Summary>`.
    pub start: usize,
    /// Index of its `</Summary>`, if any.
    pub close: Option<usize>,
}

/// One parallel block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Index of its `<Parallel>`.
    pub start: usize,
    /// Index of its `</Parallel>`; `None` when the row is truncated inside the block.
    pub end: Option<usize>,
    /// Nesting depth (0 for a block outside every other block).
    pub depth: usize,
    /// The enclosing block (row-local id, an index into [`RowParse::blocks`]).
    pub parent: Option<usize>,
    /// The enclosing block's path this block lies in (`None` in its header or tail).
    pub parent_path: Option<usize>,
    /// The paths, in order.
    pub paths: Vec<PathSpan>,
    /// The block's summary: inside the block (layout B, `summary_inside`) or the first summary
    /// that follows it at the same level (layout A).
    pub summary: Option<SummarySpan>,
    /// True when [`Block::summary`] lies inside the block (layout B).
    pub summary_inside: bool,
    /// Real response tokens before its `<Parallel>` (for the start-as-a-fraction statistic).
    pub response_offset: usize,
}

/// One path seen from inside: the tokens it must not attend are `lo..hi` (the earlier paths of
/// its block), plus whatever its enclosing path (`parent`) must not attend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathNode {
    /// Index of the block's first `<Path>`.
    pub lo: usize,
    /// Index of this path's `<Path>` (`lo == hi` for the first path).
    pub hi: usize,
    /// Node of the enclosing path, or -1.
    pub parent: i32,
}

/// The per-token arrays of a row, written by [`parse_row_into`].
pub struct TokenSlices<'a> {
    /// Position ids (structured: paths restart; pads 0).
    pub position_ids: &'a mut [i64],
    /// Innermost block, path and depth of each token, as arrays or as runs.
    pub ids: IdsOut<'a>,
    /// Innermost [`PathNode`] whose path (at any level) contains the token, -1 if none.
    pub node: &'a mut [i32],
}

/// Where [`parse_row_into`] writes each token's innermost block, path and depth.
pub enum IdsOut<'a> {
    /// One array each, `ids.len()` long.
    Dense {
        /// Innermost block (row-local id), -1 outside blocks and for pads.
        block_ids: &'a mut [i32],
        /// Path index within the innermost block, -1 in headers, tails, outside and for pads.
        path_ids: &'a mut [i32],
        /// Depth of the innermost block, -1 outside blocks and for pads.
        depth: &'a mut [i32],
    },
    /// Runs of tokens sharing all three (a handful per block instead of 12 bytes per token);
    /// [`IdRun::fill`] turns them into the arrays.
    Runs(&'a mut Vec<IdRun>),
}

/// Tokens from `start` up to the next run's start share `block`, `path` and `depth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRun {
    /// First token of the run.
    pub start: usize,
    /// See [`IdsOut::Dense`].
    pub block: i32,
    /// See [`IdsOut::Dense`].
    pub path: i32,
    /// See [`IdsOut::Dense`].
    pub depth: i32,
}

impl IdRun {
    /// Writes the arrays of a row of `block_ids.len()` tokens from its runs.
    pub fn fill(runs: &[IdRun], block_ids: &mut [i32], path_ids: &mut [i32], depth: &mut [i32]) {
        let len = block_ids.len();
        for (k, r) in runs.iter().enumerate() {
            let end = runs.get(k + 1).map_or(len, |n| n.start).min(len);
            let start = r.start.min(end);
            block_ids[start..end].fill(r.block);
            path_ids[start..end].fill(r.path);
            depth[start..end].fill(r.depth);
        }
    }
}

impl IdsOut<'_> {
    /// Tokens `i..j` get (`block`, `path`, `depth`). Calls come in increasing `i`, except that
    /// a structural fallback rewrites a suffix: runs starting at or after `i` are dropped first.
    #[inline(always)]
    fn set(&mut self, i: usize, j: usize, block: i32, path: i32, depth: i32) {
        match self {
            IdsOut::Dense {
                block_ids,
                path_ids,
                depth: d,
            } => {
                block_ids[i..j].fill(block);
                path_ids[i..j].fill(path);
                d[i..j].fill(depth);
            }
            IdsOut::Runs(runs) => {
                while runs.last().is_some_and(|r| r.start >= i) {
                    runs.pop();
                }
                if runs
                    .last()
                    .is_some_and(|r| (r.block, r.path, r.depth) == (block, path, depth))
                {
                    return;
                }
                runs.push(IdRun {
                    start: i,
                    block,
                    path,
                    depth,
                });
            }
        }
    }
}

/// Owned per-token arrays (see [`TokenSlices`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenArrays {
    /// See [`TokenSlices::position_ids`].
    pub position_ids: Vec<i64>,
    /// See [`TokenSlices::block_ids`].
    pub block_ids: Vec<i32>,
    /// See [`TokenSlices::path_ids`].
    pub path_ids: Vec<i32>,
    /// See [`TokenSlices::depth`].
    pub depth: Vec<i32>,
    /// See [`TokenSlices::node`].
    pub node: Vec<i32>,
}

impl TokenArrays {
    /// Arrays for a row of `len` tokens.
    pub fn new(len: usize) -> Self {
        Self {
            position_ids: vec![0; len],
            block_ids: vec![-1; len],
            path_ids: vec![-1; len],
            depth: vec![-1; len],
            node: vec![-1; len],
        }
    }

    /// Mutable views for [`parse_row_into`].
    pub fn slices(&mut self) -> TokenSlices<'_> {
        TokenSlices {
            position_ids: &mut self.position_ids,
            ids: IdsOut::Dense {
                block_ids: &mut self.block_ids,
                path_ids: &mut self.path_ids,
                depth: &mut self.depth,
            },
            node: &mut self.node,
        }
    }
}

/// The structure of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowParse {
    /// `ok`, `truncated` or the first structural error.
    pub status: Status,
    /// The blocks kept, in order of their `<Parallel>` (row-local ids are indices here). After a
    /// structural error, the blocks from the fallback point on are dropped.
    pub blocks: Vec<Block>,
    /// After a structural error: the index from which the row is plain causal text.
    pub causal_from: Option<usize>,
    /// Path nodes for the attention rule (see [`PathNode`], [`TokenSlices::node`]).
    pub nodes: Vec<PathNode>,
    /// Row length (pads included).
    pub len: usize,
    /// Real (non-pad) tokens at or after `response_start`.
    pub response_tokens: usize,
    /// Real tokens that lie in a path (at any level).
    pub tokens_in_paths: usize,
}

impl RowParse {
    /// True when the row is `ok`: every block closed, every block with 2 or more paths.
    pub fn is_ok(&self) -> bool {
        self.status.kind == StatusKind::Ok
    }

    /// Number of blocks whose depth is 0 (not nested in another block).
    pub fn top_level_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| b.depth == 0).count()
    }

    /// Each kept block's `<Parallel>` as a fraction of the response's real tokens, in [0, 1).
    pub fn block_start_fractions(&self) -> Vec<f64> {
        self.blocks
            .iter()
            .map(|b| {
                if self.response_tokens == 0 {
                    0.0
                } else {
                    b.response_offset as f64 / self.response_tokens as f64
                }
            })
            .collect()
    }

    /// Whether token `i` (at or before `j`'s row) may attend key `j`, from the node chain.
    ///
    /// `real` tells which tokens are real. This is the spec's rule, for callers that have the
    /// per-token node array of [`TokenSlices::node`].
    pub fn allowed(&self, node: &[i32], real: impl Fn(usize) -> bool, i: usize, j: usize) -> bool {
        if !real(i) {
            return i == j;
        }
        if j > i || !real(j) {
            return false;
        }
        let mut n = node[i];
        while n >= 0 {
            let p = self.nodes[n as usize];
            if p.lo <= j && j < p.hi {
                return false;
            }
            n = p.parent;
        }
        true
    }
}

/// Where the frame of an open block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// `<Parallel>` and tokens before the first `<Path>`.
    Header,
    /// Inside path k, before its `</Path>`.
    OpenPath,
    /// Inside path k's span, after its `</Path>`.
    ClosedPath,
    /// In-block summary or tokens after it, up to `</Parallel>`.
    Tail,
}

struct Frame {
    block: usize,
    section: Section,
    /// Position right after the header (where every path restarts).
    restart: i64,
    /// Largest position reached at the end of a path so far.
    after_paths: i64,
    /// Node of the tokens around the block (the enclosing path's node, or -1).
    outer_node: i32,
    /// Node of the current path.
    path_node: i32,
    /// Number of nodes before this block opened (to drop them on fallback).
    nodes_before: usize,
    /// Position of the `<Parallel>` token.
    start_position: i64,
    /// The last block closed directly inside this one, if it has no summary yet (layout A).
    pending_summary_owner: Option<usize>,
}

impl Frame {
    fn in_path(&self) -> bool {
        matches!(self.section, Section::OpenPath | Section::ClosedPath)
    }
    fn node(&self) -> i32 {
        if self.in_path() {
            self.path_node
        } else {
            self.outer_node
        }
    }
}

/// Parses a whole row of token ids (no pads, the response starts at 0) into its structure.
///
/// This is the entry point for token-level checks (rewards): the per-token arrays are computed
/// and dropped; use [`parse_row_into`] to keep them.
pub fn parse_row(ids: &[i64], tags: &ParallelTags) -> RowParse {
    let mut arrays = TokenArrays::new(ids.len());
    parse_row_into(ids, None, 0, tags, arrays.slices())
}

crate::simd::avx2_dispatch! {
    /// Parses one row and writes its per-token arrays into `out` (each slice `ids.len()` long).
    ///
    /// `real[i] == false` marks a pad (skipped by the structure, position 0, ids -1); `None` means
    /// every token is real. Tags before `response_start` are ordinary tokens. Positions are the
    /// structured ones (paths restart); a structural error makes the row plain causal text from the
    /// fallback point on (spec: "Malformed input").
    ///
    /// # Panics
    /// Never for valid slices; the slices of `out` and `real` must be `ids.len()` long (checked by a
    /// debug assertion; callers in this crate size them from `ids`).
    pub fn parse_row_into(
        ids: &[i64],
        real: Option<&[bool]>,
        response_start: usize,
        tags: &ParallelTags,
        out: TokenSlices<'_>,
    ) -> RowParse => parse_row_body
}

/// The body of [`parse_row_into`], inlined into its baseline and AVX2 copies.
#[inline(always)]
pub(crate) fn parse_row_body(
    ids: &[i64],
    real: Option<&[bool]>,
    response_start: usize,
    tags: &ParallelTags,
    mut out: TokenSlices<'_>,
) -> RowParse {
    let len = ids.len();
    debug_assert!(out.position_ids.len() == len && real.is_none_or(|r| r.len() == len));
    let is_real = |i: usize| real.is_none_or(|r| r[i]);
    let mut blocks: Vec<Block> = Vec::new();
    let mut nodes: Vec<PathNode> = Vec::new();
    let mut stack: Vec<Frame> = Vec::with_capacity(MAX_DEPTH);
    let mut pos: i64 = 0;
    let mut response_seen = 0usize;
    let mut last_real: Option<usize> = None;
    // Top-level bookkeeping for layout A summaries.
    let mut top_pending: Option<usize> = None;
    let mut open_summary: Option<(usize, usize)> = None; // (block, depth of the summary's level)
    let mut error: Option<(StatusKind, usize)> = None;

    let mut i = 0usize;
    while i < len {
        if !is_real(i) {
            // A run of pads, written as fills.
            let r = real.unwrap_or_default();
            let j = find_flag(&r[i..], true).map_or(len, |k| i + k);
            out.position_ids[i..j].fill(0);
            out.ids.set(i, j, -1, -1, -1);
            out.node[i..j].fill(-1);
            i = j;
            continue;
        }
        let in_response = i >= response_start;
        let tag = if in_response {
            tags.classify(ids[i])
        } else {
            None
        };
        if tag.is_none() || tag == Some(Tag::SummaryEnd) && open_summary.is_none() {
            // A run of real ordinary tokens: one context, consecutive positions. Most tokens
            // take this path, written as fills instead of one token at a time.
            let j = run_end(
                ids,
                real,
                i + 1,
                response_start,
                tags,
                open_summary.is_some(),
            );
            let (b, k, d, node) = context(&stack, &blocks);
            for (p, slot) in out.position_ids[i..j].iter_mut().enumerate() {
                *slot = pos + p as i64;
            }
            out.ids.set(i, j, b, k, d);
            out.node[i..j].fill(node);
            pos += (j - i) as i64;
            response_seen += j - i.max(response_start.min(j));
            last_real = Some(j - 1);
            i = j;
            continue;
        }
        last_real = Some(i);
        response_seen += 1;
        // Blocks open before this token (the depth of a token in the innermost one, plus one).
        let open = stack.len();
        match tag {
            Some(Tag::Parallel) => {
                if stack.len() == MAX_DEPTH {
                    error = Some((StatusKind::TooDeep, i));
                    break;
                }
                let (parent, parent_path, outer_node) = match stack.last() {
                    Some(f) => (
                        Some(f.block),
                        if f.in_path() {
                            Some(blocks[f.block].paths.len() - 1)
                        } else {
                            None
                        },
                        f.node(),
                    ),
                    None => (None, None, -1),
                };
                let id = blocks.len();
                blocks.push(Block {
                    start: i,
                    end: None,
                    depth: stack.len(),
                    parent,
                    parent_path,
                    paths: Vec::new(),
                    summary: None,
                    summary_inside: false,
                    response_offset: response_seen - 1,
                });
                // A new block at this level takes over layout-A summary ownership.
                match stack.last_mut() {
                    Some(f) => f.pending_summary_owner = None,
                    None => top_pending = None,
                }
                stack.push(Frame {
                    block: id,
                    section: Section::Header,
                    restart: 0,
                    after_paths: 0,
                    outer_node,
                    path_node: -1,
                    nodes_before: nodes.len(),
                    start_position: pos,
                    pending_summary_owner: None,
                });
                write(
                    &mut out,
                    i,
                    pos,
                    id as i32,
                    -1,
                    stack.len() as i32 - 1,
                    outer_node,
                );
                pos += 1;
            }
            Some(Tag::Path) => {
                let Some(f) = stack.last_mut() else {
                    error = Some((StatusKind::PathOutsideBlock, i));
                    break;
                };
                match f.section {
                    Section::Tail => {
                        error = Some((StatusKind::PathOutsideBlock, i));
                        break;
                    }
                    Section::Header => f.restart = pos,
                    Section::OpenPath | Section::ClosedPath => {
                        end_path(&mut blocks[f.block], i);
                        f.after_paths = f.after_paths.max(pos);
                    }
                }
                pos = f.restart;
                let block = &mut blocks[f.block];
                let lo = block.paths.first().map_or(i, |p| p.start);
                block.paths.push(PathSpan {
                    start: i,
                    close: None,
                    end: len,
                });
                nodes.push(PathNode {
                    lo,
                    hi: i,
                    parent: f.outer_node,
                });
                f.path_node = nodes.len() as i32 - 1;
                f.section = Section::OpenPath;
                f.pending_summary_owner = None;
                let k = block.paths.len() as i32 - 1;
                let d = open as i32 - 1;
                let (b, node) = (f.block as i32, f.path_node);
                write(&mut out, i, pos, b, k, d, node);
                pos += 1;
            }
            Some(Tag::PathEnd) => {
                let Some(f) = stack.last_mut() else {
                    error = Some((StatusKind::StrayClose, i));
                    break;
                };
                if f.section != Section::OpenPath {
                    error = Some((StatusKind::StrayClose, i));
                    break;
                }
                f.section = Section::ClosedPath;
                let block = &mut blocks[f.block];
                let k = block.paths.len() - 1;
                block.paths[k].close = Some(i);
                let d = open as i32 - 1;
                write(&mut out, i, pos, f.block as i32, k as i32, d, f.path_node);
                pos += 1;
            }
            Some(Tag::Summary) if !stack.is_empty() => {
                let d = stack.len() as i32 - 1;
                let f = stack.last_mut().expect("stack is not empty");
                match f.section {
                    // Layout A of a block nested in this path: its summary follows it in the path.
                    Section::OpenPath if f.pending_summary_owner.is_some() => {
                        let owner = f.pending_summary_owner.take().expect("checked");
                        blocks[owner].summary = Some(SummarySpan {
                            start: i,
                            close: None,
                        });
                        open_summary = Some((owner, open));
                        let node = f.path_node;
                        let (b, k) = (f.block as i32, blocks[f.block].paths.len() as i32 - 1);
                        write(&mut out, i, pos, b, k, d, node);
                        pos += 1;
                        i += 1;
                        continue;
                    }
                    Section::OpenPath => {
                        error = Some((StatusKind::SummaryInPath, i));
                        break;
                    }
                    Section::Header | Section::ClosedPath => {
                        if f.section == Section::ClosedPath {
                            end_path(&mut blocks[f.block], i);
                            f.after_paths = f.after_paths.max(pos);
                            pos = f.after_paths;
                        }
                        f.section = Section::Tail;
                        let block = &mut blocks[f.block];
                        block.summary = Some(SummarySpan {
                            start: i,
                            close: None,
                        });
                        block.summary_inside = true;
                        open_summary = Some((f.block, open));
                    }
                    Section::Tail => {}
                }
                let f = stack.last().expect("stack is not empty");
                write(&mut out, i, pos, f.block as i32, -1, d, f.outer_node);
                pos += 1;
            }
            Some(Tag::Summary) => {
                // Outside every block: a layout-A summary of the block just closed, if any.
                if let Some(owner) = top_pending.take() {
                    blocks[owner].summary = Some(SummarySpan {
                        start: i,
                        close: None,
                    });
                    open_summary = Some((owner, 0));
                }
                write(&mut out, i, pos, -1, -1, -1, -1);
                pos += 1;
            }
            Some(Tag::ParallelEnd) => {
                let Some(f) = stack.last_mut() else {
                    error = Some((StatusKind::StrayClose, i));
                    break;
                };
                if f.in_path() {
                    end_path(&mut blocks[f.block], i);
                    f.after_paths = f.after_paths.max(pos);
                    pos = f.after_paths;
                }
                if blocks[f.block].paths.len() < 2 {
                    error = Some((StatusKind::SinglePath, i));
                    break;
                }
                f.section = Section::Tail;
                let f = stack.pop().expect("stack is not empty");
                blocks[f.block].end = Some(i);
                let d = stack.len() as i32;
                write(&mut out, i, pos, f.block as i32, -1, d, f.outer_node);
                pos += 1;
                match stack.last_mut() {
                    Some(parent) => parent.pending_summary_owner = Some(f.block),
                    None => top_pending = Some(f.block),
                }
            }
            // `</Summary>` closes the open summary; other ordinary tokens take the run path above.
            Some(Tag::SummaryEnd) | None => {
                if let Some((owner, level)) = open_summary.filter(|_| tag.is_some()) {
                    if level == stack.len() {
                        if let Some(s) = blocks[owner].summary.as_mut() {
                            s.close.get_or_insert(i);
                        }
                        open_summary = None;
                    }
                }
                let (b, k, d, node) = context(&stack, &blocks);
                write(&mut out, i, pos, b, k, d, node);
                pos += 1;
            }
        }
        i += 1;
    }

    let status;
    let mut causal_from = None;
    if let Some((kind, at)) = error {
        status = Status {
            kind,
            index: Some(at),
        };
        // Plain causal text from the outermost open block's `<Parallel>` (or the error token).
        let (from, from_pos) = match stack.first() {
            Some(f) => {
                nodes.truncate(f.nodes_before);
                let from = blocks[f.block].start;
                blocks.truncate(f.block);
                (from, f.start_position)
            }
            None => (at, pos),
        };
        for b in &mut blocks {
            if b.summary.is_some_and(|s| s.start >= from) {
                b.summary = None;
            }
        }
        let mut p = from_pos;
        for i in from..len {
            if is_real(i) {
                write(&mut out, i, p, -1, -1, -1, -1);
                p += 1;
            } else {
                write(&mut out, i, 0, -1, -1, -1, -1);
            }
        }
        causal_from = Some(from);
    } else if !stack.is_empty() {
        let end = last_real.map_or(0, |i| i + 1);
        status = Status {
            kind: StatusKind::Truncated,
            index: Some(end),
        };
        for f in &stack {
            end_path(&mut blocks[f.block], end);
        }
    } else {
        status = Status {
            kind: StatusKind::Ok,
            index: None,
        };
    }
    let rs = response_start.min(len);
    let response_tokens = real.map_or(len - rs, |r| count_true(&r[rs..]));
    let tokens_in_paths = count_in_paths(out.node);
    RowParse {
        status,
        blocks,
        causal_from,
        nodes,
        len,
        response_tokens,
        tokens_in_paths,
    }
}

/// One past the last token of the run of real ordinary tokens starting at `from`: the run stops
/// at a pad or at a tag in the response (`</Summary>` only when a summary is open).
#[inline(always)]
fn run_end(
    ids: &[i64],
    real: Option<&[bool]>,
    from: usize,
    response_start: usize,
    tags: &ParallelTags,
    summary_open: bool,
) -> usize {
    let breaks = |id: i64| match tags.classify(id) {
        None => false,
        Some(Tag::SummaryEnd) => summary_open,
        Some(_) => true,
    };
    let len = ids.len();
    // Prompt tokens are never tags: only pads end a run there.
    let prompt_end = response_start.clamp(from, len);
    let mut j = from;
    if let Some(r) = real {
        if let Some(k) = find_flag(&r[from..prompt_end], false) {
            return from + k;
        }
        j = prompt_end;
        let (ids, r) = (&ids[..len], &r[..len]);
        while j + RUN_CHUNK <= len {
            let (c, rc) = (&ids[j..j + RUN_CHUNK], &r[j..j + RUN_CHUNK]);
            let maybe = c
                .iter()
                .zip(rc)
                .fold(false, |acc, (&id, &x)| acc | !x | tags.in_range(id));
            if maybe {
                if let Some(k) = c.iter().zip(rc).position(|(&id, &x)| !x || breaks(id)) {
                    return j + k;
                }
            }
            j += RUN_CHUNK;
        }
        let stop = ids[j..]
            .iter()
            .zip(&r[j..])
            .position(|(&id, &x)| !x || breaks(id));
        return stop.map_or(len, |k| j + k);
    }
    j = j.max(prompt_end);
    // Whole chunks with no id in the tags' range are skipped with a vectorised test.
    let mut chunks = ids[j..].chunks_exact(RUN_CHUNK);
    for c in &mut chunks {
        if c.iter().fold(false, |acc, &id| acc | tags.in_range(id)) {
            if let Some(k) = c.iter().position(|&id| breaks(id)) {
                return j + k;
            }
        }
        j += RUN_CHUNK;
    }
    chunks
        .remainder()
        .iter()
        .position(|&id| breaks(id))
        .map_or(len, |k| j + k)
}

/// Index of the first `flag` in `r`: whole chunks without one are skipped by a vectorised test.
#[inline(always)]
fn find_flag(r: &[bool], flag: bool) -> Option<usize> {
    let mut chunks = r.chunks_exact(FLAG_CHUNK);
    let mut base = 0;
    for c in &mut chunks {
        if c.iter().fold(false, |acc, &x| acc | (x == flag)) {
            return c.iter().position(|&x| x == flag).map(|k| base + k);
        }
        base += FLAG_CHUNK;
    }
    chunks
        .remainder()
        .iter()
        .position(|&x| x == flag)
        .map(|k| base + k)
}

/// Number of `true` flags: byte sums over chunks short enough not to overflow (vectorised).
#[inline(always)]
fn count_true(r: &[bool]) -> usize {
    r.chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |acc, &x| acc + u8::from(x))))
        .sum()
}

/// Number of tokens inside a path (node >= 0), counted in 32-bit lanes (vectorised).
#[inline(always)]
fn count_in_paths(node: &[i32]) -> usize {
    node.chunks(1 << 20)
        .map(|c| c.iter().fold(0u32, |acc, &n| acc + u32::from(n >= 0)) as usize)
        .sum()
}

/// Flags tested at once by `find_flag`.
const FLAG_CHUNK: usize = 32;

/// Tokens tested at once by `run_end`'s vectorised skip.
const RUN_CHUNK: usize = 16;

/// Ends the open path of `block` (if any) at `end` (exclusive).
fn end_path(block: &mut Block, end: usize) {
    if let Some(p) = block.paths.last_mut() {
        if p.end > end {
            p.end = end;
        }
    }
}

#[inline(always)]
fn write(
    out: &mut TokenSlices<'_>,
    i: usize,
    pos: i64,
    block: i32,
    path: i32,
    depth: i32,
    node: i32,
) {
    out.position_ids[i] = pos;
    out.ids.set(i, i + 1, block, path, depth);
    out.node[i] = node;
}

/// (block, path, depth, node) of an ordinary token in the innermost open block's current section.
fn context(stack: &[Frame], blocks: &[Block]) -> (i32, i32, i32, i32) {
    match stack.last() {
        Some(f) => {
            let path = if f.in_path() {
                blocks[f.block].paths.len() as i32 - 1
            } else {
                -1
            };
            (f.block as i32, path, stack.len() as i32 - 1, f.node())
        }
        None => (-1, -1, -1, -1),
    }
}
