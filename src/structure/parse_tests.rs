//! Tests of the row parser: the spec's worked examples, every status kind, and properties
//! against an independent construction (rows generated from a tree, with the positions and path
//! membership the spec gives them).

use proptest::prelude::*;

use super::*;
use crate::structure::parse::parse_row_body;

// Tag ids; ordinary tokens are 0, 7, 8, 9.
const P: i64 = 1;
const PE: i64 = 2;
const A: i64 = 3;
const AE: i64 = 4;
const S: i64 = 5;
const SE: i64 = 6;
const X: i64 = 9;

fn tags() -> ParallelTags {
    ParallelTags::new(P, PE, A, AE, S, SE).unwrap()
}

fn run(ids: &[i64], real: Option<&[bool]>, rs: usize) -> (RowParse, TokenArrays) {
    let mut arrays = TokenArrays::new(ids.len());
    let row = parse_row_into(ids, real, rs, &tags(), arrays.slices());
    (row, arrays)
}

fn allowed(row: &RowParse, a: &TokenArrays, real: Option<&[bool]>, i: usize, j: usize) -> bool {
    row.allowed(&a.node, |k| real.is_none_or(|r| r[k]), i, j)
}

/// Asserts the mask: `blocked` pairs (rows x columns) are refused, every other pair follows the
/// causal rule over real tokens.
fn check_mask(ids: &[i64], real: Option<&[bool]>, rs: usize, blocked: &[(usize, usize)]) {
    let (row, a) = run(ids, real, rs);
    let is_real = |k: usize| real.is_none_or(|r| r[k]);
    for i in 0..ids.len() {
        for j in 0..ids.len() {
            let expected = if !is_real(i) {
                i == j
            } else {
                j <= i && is_real(j) && !blocked.contains(&(i, j))
            };
            assert_eq!(allowed(&row, &a, real, i, j), expected, "({i}, {j})");
        }
    }
}

fn pairs(
    rows: std::ops::RangeInclusive<usize>,
    cols: std::ops::RangeInclusive<usize>,
) -> Vec<(usize, usize)> {
    rows.flat_map(|i| cols.clone().map(move |j| (i, j)))
        .collect()
}

#[test]
fn example_1_layout_a() {
    let ids = [X, X, P, A, X, AE, A, X, X, AE, PE, S, X, SE];
    let (row, a) = run(&ids, None, 0);
    assert_eq!(row.status.kind, StatusKind::Ok);
    assert_eq!(a.position_ids, [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]);
    check_mask(&ids, None, 0, &pairs(6..=9, 3..=5));
    let b = &row.blocks[0];
    assert_eq!(
        b.paths,
        [
            PathSpan {
                start: 3,
                close: Some(5),
                end: 6
            },
            PathSpan {
                start: 6,
                close: Some(9),
                end: 10
            },
        ]
    );
    assert_eq!(
        b.summary,
        Some(SummarySpan {
            start: 11,
            close: Some(13)
        })
    );
    assert!(!b.summary_inside);
    assert_eq!(
        a.path_ids,
        [-1, -1, -1, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1, -1]
    );
    assert_eq!(a.block_ids, [-1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1]);
    assert_eq!(a.depth, [-1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1]);
    assert_eq!(row.tokens_in_paths, 7);
    assert_eq!(row.block_start_fractions(), [2.0 / 14.0]);
}

#[test]
fn example_2_token_between_paths_belongs_to_the_path_before() {
    let n = 8;
    let ids = [P, A, X, AE, n, A, 7, AE, PE];
    let (row, a) = run(&ids, None, 0);
    assert_eq!(row.status.kind, StatusKind::Ok);
    assert_eq!(a.position_ids, [0, 1, 2, 3, 4, 1, 2, 3, 5]);
    check_mask(&ids, None, 0, &pairs(5..=7, 1..=4));
    assert_eq!(a.path_ids[4], 0);
}

#[test]
fn example_3_left_padding() {
    let q = 7;
    let ids = [0, 0, q, q, P, A, X, AE, A, 8, AE, PE];
    let real = [
        false, false, true, true, true, true, true, true, true, true, true, true,
    ];
    let (row, a) = run(&ids, Some(&real), 4);
    assert_eq!(row.status.kind, StatusKind::Ok);
    assert_eq!(a.position_ids, [0, 0, 0, 1, 2, 3, 4, 5, 3, 4, 5, 6]);
    check_mask(&ids, Some(&real), 4, &pairs(8..=10, 5..=7));
    assert_eq!(row.response_tokens, 8);
    assert_eq!(row.block_start_fractions(), [0.0]);
}

#[test]
fn example_4_truncated() {
    let ids = [P, A, X, AE, A, 8];
    let (row, a) = run(&ids, None, 0);
    assert_eq!(
        row.status,
        Status {
            kind: StatusKind::Truncated,
            index: Some(6)
        }
    );
    assert_eq!(a.position_ids, [0, 1, 2, 3, 1, 2]);
    check_mask(&ids, None, 0, &pairs(4..=5, 1..=3));
    assert_eq!(row.blocks[0].end, None);
    assert_eq!(row.blocks[0].paths[1].end, 6);
}

#[test]
fn example_5_tags_in_the_prompt_are_ordinary() {
    let q = 7;
    let ids = [P, q, A, q, P, A, X, AE, A, 8, AE, PE];
    let (row, a) = run(&ids, None, 4);
    assert_eq!(row.status.kind, StatusKind::Ok);
    assert_eq!(a.position_ids, [0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7, 8]);
    assert_eq!(row.blocks.len(), 1);
    assert_eq!(row.blocks[0].start, 4);
    assert_eq!(row.block_start_fractions(), [0.0]);
}

#[test]
fn layout_b_summary_inside_the_block() {
    // P A x a A x x a S y s p z
    let ids = [P, A, X, AE, A, X, X, AE, S, 8, SE, PE, 7];
    let (row, a) = run(&ids, None, 0);
    assert_eq!(row.status.kind, StatusKind::Ok);
    assert_eq!(a.position_ids, [0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let b = &row.blocks[0];
    assert!(b.summary_inside);
    assert_eq!(
        b.summary,
        Some(SummarySpan {
            start: 8,
            close: Some(10)
        })
    );
    assert_eq!(b.paths[1].end, 8);
    check_mask(&ids, None, 0, &pairs(4..=7, 1..=3));
}

#[test]
fn three_paths_and_right_padding() {
    // P A x a A y y a A z a p _ _
    let ids = [P, A, X, AE, A, X, X, AE, A, X, AE, PE, 0, 0];
    let mut real = [true; 14];
    real[12] = false;
    real[13] = false;
    let (row, a) = run(&ids, Some(&real), 0);
    assert_eq!(row.status.kind, StatusKind::Ok);
    assert_eq!(a.position_ids, [0, 1, 2, 3, 1, 2, 3, 4, 1, 2, 3, 5, 0, 0]);
    let mut blocked = pairs(4..=7, 1..=3);
    blocked.extend(pairs(8..=10, 1..=7));
    check_mask(&ids, Some(&real), 0, &blocked);
    assert_eq!(row.blocks[0].paths.len(), 3);
}

#[test]
fn nesting_two_levels() {
    // 0 P 1 A 2 P 3 A 4 x 5 a 6 A 7 y 8 a 9 p 10 a 11 A 12 z 13 a 14 p
    let ids = [P, A, P, A, X, AE, A, X, AE, PE, AE, A, X, AE, PE];
    let (row, a) = run(&ids, None, 0);
    assert_eq!(row.status.kind, StatusKind::Ok);
    // outer h = 1; path 0: A=1, inner P=2 (h=3): A 3 x 4 a 5 | A 3 y 4 a 5 | p 6, a 7 -> 8
    // path 1: A 1 z 2 a 3 -> 4; `</Parallel>` at max(8, 4) = 8.
    assert_eq!(
        a.position_ids,
        [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 1, 2, 3, 8]
    );
    assert_eq!(a.depth, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
    assert_eq!(row.blocks[1].parent, Some(0));
    assert_eq!(row.blocks[1].parent_path, Some(0));
    let mut blocked = pairs(6..=8, 3..=5);
    blocked.extend(pairs(11..=13, 1..=10));
    check_mask(&ids, None, 0, &blocked);
}

#[test]
fn nested_layout_a_summary_inside_a_path() {
    // P A P A x a A y a p S s a A z a p
    let ids = [P, A, P, A, X, AE, A, X, AE, PE, S, SE, AE, A, X, AE, PE];
    let (row, _) = run(&ids, None, 0);
    assert_eq!(row.status.kind, StatusKind::Ok);
    assert_eq!(
        row.blocks[1].summary,
        Some(SummarySpan {
            start: 10,
            close: Some(11)
        })
    );
}

fn status_of(ids: &[i64]) -> (Status, Option<usize>, TokenArrays) {
    let (row, a) = run(ids, None, 0);
    (row.status, row.causal_from, a)
}

#[test]
fn structural_errors_fall_back_to_causal_text() {
    use StatusKind::*;
    let cases: Vec<(Vec<i64>, StatusKind, usize, usize)> = vec![
        // ids, kind, index, causal from
        (vec![X, AE, X], StrayClose, 1, 1),
        (vec![X, PE, X], StrayClose, 1, 1),
        (vec![P, A, X, AE, AE, PE], StrayClose, 4, 0),
        (vec![P, AE], StrayClose, 1, 0),
        (vec![X, A, X, AE], PathOutsideBlock, 1, 1),
        (
            vec![P, A, X, AE, A, X, AE, S, SE, A, PE],
            PathOutsideBlock,
            9,
            0,
        ),
        (vec![P, A, X, S, SE, AE, PE], SummaryInPath, 3, 0),
        (vec![P, A, X, AE, PE], SinglePath, 4, 0),
        (vec![X, P, PE], SinglePath, 2, 1),
    ];
    for (ids, kind, index, from) in cases {
        let (status, causal_from, a) = status_of(&ids);
        assert_eq!(
            status,
            Status {
                kind,
                index: Some(index)
            },
            "{ids:?}"
        );
        assert!(kind.is_error());
        assert_eq!(causal_from, Some(from), "{ids:?}");
        let expected: Vec<i64> = (0..ids.len() as i64).collect();
        assert_eq!(a.position_ids, expected, "{ids:?}");
        assert!(a.block_ids[from..].iter().all(|&b| b == -1));
    }
}

#[test]
fn error_keeps_the_structure_before_the_failing_block() {
    // A good block, then a block with one path.
    let ids = [P, A, X, AE, A, X, AE, PE, X, P, A, X, AE, PE, X];
    let (row, a) = run(&ids, None, 0);
    assert_eq!(
        row.status,
        Status {
            kind: StatusKind::SinglePath,
            index: Some(13)
        }
    );
    assert_eq!(row.causal_from, Some(9));
    assert_eq!(row.blocks.len(), 1);
    assert_eq!(
        a.position_ids,
        [0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    );
    assert_eq!(row.nodes.len(), 2);
}

#[test]
fn too_deep() {
    let mut ids = Vec::new();
    for _ in 0..MAX_DEPTH {
        ids.extend([P, A]);
    }
    let (row, _) = run(&ids, None, 0);
    assert_eq!(row.status.kind, StatusKind::Truncated);
    assert_eq!(
        row.blocks.iter().map(|b| b.depth).max(),
        Some(MAX_DEPTH - 1)
    );
    ids.push(P);
    let (row, a) = run(&ids, None, 0);
    assert_eq!(
        row.status,
        Status {
            kind: StatusKind::TooDeep,
            index: Some(2 * MAX_DEPTH)
        }
    );
    assert_eq!(row.causal_from, Some(0));
    assert!(row.blocks.is_empty());
    assert_eq!(a.position_ids, (0..ids.len() as i64).collect::<Vec<_>>());
}

#[test]
fn empty_and_tiny_rows() {
    assert_eq!(parse_row(&[], &tags()).status.kind, StatusKind::Ok);
    assert_eq!(parse_row(&[X], &tags()).status.kind, StatusKind::Ok);
    assert_eq!(
        parse_row(&[P], &tags()).status,
        Status {
            kind: StatusKind::Truncated,
            index: Some(1)
        }
    );
    let (row, a) = run(&[P, A], Some(&[false, false]), 0);
    assert_eq!(
        row.status,
        Status {
            kind: StatusKind::Ok,
            index: None
        }
    );
    assert_eq!(a.position_ids, [0, 0]);
    assert!(allowed(&row, &a, Some(&[false, false]), 1, 1));
    assert!(!allowed(&row, &a, Some(&[false, false]), 1, 0));
}

// ---- properties -------------------------------------------------------------------------------

/// A well-formed response as a tree.
#[derive(Debug, Clone)]
enum Item {
    Text(usize),
    Block {
        paths: Vec<Vec<Item>>,
        header: usize,
        gap: usize,
        inside_summary: bool,
    },
}

fn item(depth: u32) -> BoxedStrategy<Item> {
    let text = (1usize..4).prop_map(Item::Text);
    if depth == 0 {
        return text.boxed();
    }
    let path = prop::collection::vec(item(depth - 1), 0..3);
    prop_oneof![
        3 => text,
        1 => (prop::collection::vec(path, 2..4), 0usize..2, 0usize..2, any::<bool>()).prop_map(
            |(paths, header, gap, inside_summary)| Item::Block { paths, header, gap, inside_summary }
        ),
    ]
    .boxed()
}

/// Emits `items` with the spec's positions, and for each token the list of (path start,
/// block first-path start) intervals it must not attend.
struct Emit {
    ids: Vec<i64>,
    pos: Vec<i64>,
    forbidden: Vec<Vec<(usize, usize)>>,
}

fn emit(items: &[Item], out: &mut Emit, pos: &mut i64, ctx: &[(usize, usize)]) {
    let push = |out: &mut Emit, id: i64, p: &mut i64, ctx: &[(usize, usize)]| {
        out.ids.push(id);
        out.pos.push(*p);
        out.forbidden.push(ctx.to_vec());
        *p += 1;
    };
    for it in items {
        match it {
            Item::Text(n) => {
                for _ in 0..*n {
                    push(out, X, pos, ctx);
                }
            }
            Item::Block {
                paths,
                header,
                gap,
                inside_summary,
            } => {
                push(out, P, pos, ctx);
                for _ in 0..*header {
                    push(out, 8, pos, ctx);
                }
                let restart = *pos;
                let first = out.ids.len();
                let mut longest = restart;
                for body in paths {
                    let start = out.ids.len();
                    let mut p = restart;
                    let mut inner = ctx.to_vec();
                    inner.push((first, start));
                    push(out, A, &mut p, &inner);
                    emit(body, out, &mut p, &inner);
                    push(out, AE, &mut p, &inner);
                    for _ in 0..*gap {
                        push(out, 7, &mut p, &inner);
                    }
                    longest = longest.max(p);
                }
                *pos = longest;
                if *inside_summary {
                    push(out, S, pos, ctx);
                    push(out, X, pos, ctx);
                    push(out, SE, pos, ctx);
                }
                push(out, PE, pos, ctx);
            }
        }
    }
}

fn depth_of(items: &[Item]) -> usize {
    items
        .iter()
        .map(|it| match it {
            Item::Text(_) => 0,
            Item::Block { paths, .. } => 1 + paths.iter().map(|p| depth_of(p)).max().unwrap_or(0),
        })
        .max()
        .unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn well_formed_rows_match_the_tree(items in prop::collection::vec(item(3), 0..5)) {
        prop_assume!(depth_of(&items) <= MAX_DEPTH);
        let mut e = Emit { ids: vec![], pos: vec![], forbidden: vec![] };
        let mut pos = 0;
        emit(&items, &mut e, &mut pos, &[]);
        let (row, a) = run(&e.ids, None, 0);
        prop_assert_eq!(row.status.kind, StatusKind::Ok);
        prop_assert_eq!(&a.position_ids, &e.pos);
        for i in 0..e.ids.len() {
            for j in 0..e.ids.len() {
                let expected = j <= i && !e.forbidden[i].iter().any(|&(lo, hi)| lo <= j && j < hi);
                prop_assert_eq!(allowed(&row, &a, None, i, j), expected, "({}, {})", i, j);
            }
        }
    }

    #[test]
    fn any_token_soup_parses_without_panicking(
        ids in prop::collection::vec(prop_oneof![Just(P), Just(PE), Just(A), Just(AE), Just(S), Just(SE), Just(X)], 0..60),
        rs in 0usize..8,
        pads in prop::collection::vec(any::<bool>(), 60),
    ) {
        let real: Vec<bool> = pads[..ids.len()].iter().map(|&p| !p).collect();
        let (row, a) = run(&ids, Some(&real), rs);
        let real_count = real.iter().filter(|&&r| r).count();
        // Real tokens outside blocks and inside causal fallbacks count up by one.
        if let Some(from) = row.causal_from {
            let before = real[..from].iter().filter(|&&r| r).count();
            let tail: Vec<i64> = (from..ids.len()).filter(|&i| real[i]).map(|i| a.position_ids[i]).collect();
            let start = tail.first().copied().unwrap_or(0);
            prop_assert!(start <= before as i64);
            prop_assert_eq!(tail, (start..start + (real_count - before) as i64).collect::<Vec<_>>());
        }
        for (k, b) in row.blocks.iter().enumerate() {
            prop_assert!(b.start >= rs);
            prop_assert_eq!(ids[b.start], P);
            prop_assert!(b.depth < MAX_DEPTH);
            if row.status.kind == StatusKind::Ok {
                prop_assert!(b.end.is_some() && b.paths.len() >= 2);
            }
            for w in b.paths.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
            for p in &b.paths {
                for (i, &r) in real.iter().enumerate().take(p.end).skip(p.start) {
                    if r && a.depth[i] == b.depth as i32 {
                        prop_assert_eq!(a.block_ids[i], k as i32);
                    }
                }
            }
        }
        for (i, &r) in real.iter().enumerate() {
            if !r {
                prop_assert_eq!(a.position_ids[i], 0);
                prop_assert_eq!(a.block_ids[i], -1);
            }
        }
        // The run-length output (what the batch layer keeps) gives the same arrays.
        let n = ids.len();
        let (mut pos, mut node, mut runs) = (vec![0i64; n], vec![-1i32; n], Vec::new());
        let out = TokenSlices { position_ids: &mut pos, ids: IdsOut::Runs(&mut runs), node: &mut node };
        let row_runs = parse_row_into(&ids, Some(&real), rs, &tags(), out);
        prop_assert_eq!(&row_runs, &row);
        prop_assert_eq!(&pos, &a.position_ids);
        prop_assert_eq!(&node, &a.node);
        prop_assert!(runs.windows(2).all(|w| w[0].start < w[1].start));
        let (mut bl, mut pa, mut de) = (vec![7i32; n], vec![7i32; n], vec![7i32; n]);
        IdRun::fill(&runs, &mut bl, &mut pa, &mut de);
        prop_assert_eq!(&bl, &a.block_ids);
        prop_assert_eq!(&pa, &a.path_ids);
        prop_assert_eq!(&de, &a.depth);
    }

    #[test]
    fn baseline_and_avx2_copies_agree(
        ids in prop::collection::vec(
            prop_oneof![
                20 => Just(X), 1 => Just(P), 1 => Just(PE), 2 => Just(A), 2 => Just(AE),
                1 => Just(S), 1 => Just(SE), 2 => Just(0i64), 1 => Just(-3i64),
            ],
            0..400,
        ),
        rs in 0usize..40,
        pad_runs in prop::collection::vec((0usize..400, 0usize..40), 0..4),
        masked in any::<bool>(),
    ) {
        // Long rows with runs of pads, so the 16- and 32-token vectorised skips are exercised;
        // parse_row_body called here is compiled for the baseline, parse_row_into dispatches
        // (to AVX2 on CPUs that have it).
        let mut real = vec![true; ids.len()];
        for (at, n) in pad_runs {
            for r in real.iter_mut().skip(at).take(n) {
                *r = false;
            }
        }
        let real = masked.then_some(&real[..]);
        let n = ids.len();
        let mut a = TokenArrays::new(n);
        let row_a = parse_row_into(&ids, real, rs, &tags(), a.slices());
        let mut b = TokenArrays::new(n);
        let row_b = parse_row_body(&ids, real, rs, &tags(), b.slices());
        prop_assert_eq!(&row_a, &row_b);
        prop_assert_eq!(&a.position_ids, &b.position_ids);
        prop_assert_eq!(&a.node, &b.node);
        prop_assert_eq!(&a.block_ids, &b.block_ids);
        prop_assert_eq!(&a.path_ids, &b.path_ids);
        prop_assert_eq!(&a.depth, &b.depth);
    }
}
