use proptest::prelude::*;
use tch::{Kind, Tensor};

use super::*;

const OPEN: i64 = 100;
const CLOSE: i64 = 101;
const NL: i64 = 7;

fn tags(before: &[i64], after: &[i64]) -> ObservationTags {
    ObservationTags::new(OPEN, CLOSE, before.to_vec(), after.to_vec()).unwrap()
}

fn rows(rows: &[&[i64]]) -> Tensor {
    let width = rows[0].len();
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, width as i64])
}

fn to_vec(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1)).unwrap()
}

fn both_paths(ids: &Tensor, tags: &ObservationTags, am: Option<&Tensor>) -> Vec<i64> {
    let cpu = observation_mask(ids, tags, am, TensorPath::Cpu).unwrap();
    let dev = observation_mask(ids, tags, am, TensorPath::Device).unwrap();
    assert_eq!(cpu.kind(), dev.kind());
    assert_eq!(to_vec(&cpu), to_vec(&dev), "paths disagree on {ids:?}");
    to_vec(&cpu)
}

#[test]
fn hand_worked_row() {
    // policy: 1 2 | obs: 7 <information> 5 6 </information> 7 | policy: 3 7 | stray close: 101
    let ids = rows(&[&[1, 2, NL, OPEN, 5, 6, CLOSE, NL, 3, NL, CLOSE]]);
    assert_eq!(
        both_paths(&ids, &tags(&[NL], &[NL]), None),
        vec![1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    );
    // Without before/after only the tags and what is between them are observation tokens.
    assert_eq!(
        both_paths(&ids, &tags(&[], &[]), None),
        vec![1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]
    );
}

#[test]
fn nested_open_unclosed_and_padding() {
    // A second open inside an observation changes nothing; an unclosed one runs to the end.
    let ids = rows(&[
        &[1, OPEN, OPEN, 4, CLOSE, 2, OPEN, 3, 3],
        &[0, 0, 1, OPEN, 9, CLOSE, NL, 2, 0],
    ]);
    let am = rows(&[&[1, 1, 1, 1, 1, 1, 1, 1, 1], &[0, 0, 1, 1, 1, 1, 1, 1, 0]]);
    assert_eq!(
        both_paths(&ids, &tags(&[], &[NL]), Some(&am)),
        vec![1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    );
}

#[test]
fn before_needs_adjacent_valid_tokens() {
    // The `before` ids are cleared only when they sit right before the open, on valid tokens.
    let ids = rows(&[&[NL, NL, OPEN, CLOSE], &[NL, 5, OPEN, CLOSE]]);
    let am = rows(&[&[1, 1, 1, 1], &[1, 1, 1, 1]]);
    assert_eq!(
        both_paths(&ids, &tags(&[NL, NL], &[]), Some(&am)),
        vec![0, 0, 0, 0, 1, 1, 0, 0]
    );
    let am = rows(&[&[0, 1, 1, 1], &[1, 1, 1, 1]]);
    assert_eq!(
        both_paths(&ids, &tags(&[NL, NL], &[]), Some(&am)),
        vec![0, 1, 0, 0, 1, 1, 0, 0]
    );
}

#[test]
fn output_dtype_follows_the_attention_mask() {
    let ids = rows(&[&[1, OPEN, 2, CLOSE]]);
    for kind in [Kind::Bool, Kind::Int, Kind::Int64, Kind::Float, Kind::Int16] {
        let am = Tensor::ones([1, 4], (kind, Device::Cpu));
        for path in [TensorPath::Cpu, TensorPath::Device] {
            let m = observation_mask(&ids, &tags(&[], &[]), Some(&am), path).unwrap();
            assert_eq!(m.kind(), kind);
            assert_eq!(to_vec(&m), vec![1, 0, 0, 0]);
        }
    }
    let m = observation_mask(&ids, &tags(&[], &[]), None, TensorPath::Cpu).unwrap();
    assert_eq!(m.kind(), Kind::Int64);
}

#[test]
fn empty_batches() {
    for shape in [[0, 5], [3, 0]] {
        let ids = Tensor::zeros(shape, (Kind::Int64, Device::Cpu));
        for path in [TensorPath::Cpu, TensorPath::Device] {
            let m = observation_mask(&ids, &tags(&[], &[]), None, path).unwrap();
            assert_eq!(m.size(), shape.to_vec());
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    assert!(ObservationTags::new(3, 3, vec![], vec![]).is_err());
    assert!(ObservationTags::new(3, 4, vec![3], vec![]).is_err());
    assert!(ObservationTags::new(3, 4, vec![], vec![1, 4]).is_err());
    let t = tags(&[], &[]);
    let flat = Tensor::from_slice(&[1i64, 2]);
    assert!(matches!(
        observation_mask(&flat, &t, None, TensorPath::Auto),
        Err(Error::Shape(_))
    ));
    let floats = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
    assert!(matches!(
        observation_mask(&floats, &t, None, TensorPath::Auto),
        Err(Error::Dtype(_))
    ));
    let ids = Tensor::zeros([2, 2], (Kind::Int64, Device::Cpu));
    let am = Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu));
    assert!(matches!(
        observation_mask(&ids, &t, Some(&am), TensorPath::Auto),
        Err(Error::Shape(_))
    ));
    assert!(spans_mask(&[2], 1, &[]).is_err());
    assert!(spans_mask(&[2], 3, &[(1, 0, 1)]).is_err());
    assert!(spans_mask(&[2], 3, &[(0, 1, 3)]).is_err());
    assert!(spans_mask(&[2], 3, &[(0, 2, 1)]).is_err());
}

#[test]
fn spans_mask_hand_worked() {
    let m = spans_mask(&[5, 3], 6, &[(0, 1, 3), (1, 0, 1), (0, 4, 5)]).unwrap();
    assert_eq!(m.size(), vec![2, 6]);
    assert_eq!(to_vec(&m), vec![1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0]);
}

/// One rollout row the way r1kit's loop writes it: policy pieces (never holding a tag) and
/// observations `before <information> docs </information> after`, with the spans it records.
fn build_row(pieces: &Pieces, before: &[i64], after: &[i64]) -> RowSpans {
    let mut ids = Vec::new();
    let mut spans = Vec::new();
    for (policy, docs) in pieces {
        ids.extend_from_slice(policy);
        let start = ids.len();
        ids.extend_from_slice(before);
        ids.push(OPEN);
        ids.extend_from_slice(docs);
        ids.push(CLOSE);
        ids.extend_from_slice(after);
        spans.push((start as i64, ids.len() as i64));
    }
    (ids, spans)
}

type RowSpans = (Vec<i64>, Vec<(i64, i64)>);

fn token() -> impl Strategy<Value = i64> {
    // Small alphabet, so policy text often repeats the before/after ids.
    prop_oneof![Just(NL), 0i64..10]
}

/// Policy pieces, each followed by an observation with these documents.
type Pieces = Vec<(Vec<i64>, Vec<i64>)>;

fn row() -> impl Strategy<Value = (Pieces, Vec<i64>)> {
    (
        prop::collection::vec(
            (
                prop::collection::vec(token(), 0..6),
                prop::collection::vec(token(), 0..6),
            ),
            0..4,
        ),
        prop::collection::vec(token(), 0..6),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The mask from ids agrees with the mask from the recorded spans, on both paths, with
    /// left or right padding.
    #[test]
    fn ids_and_spans_agree(
        batch in prop::collection::vec(row(), 1..5),
        before in prop::collection::vec(Just(NL), 0..3),
        after in prop::collection::vec(prop_oneof![Just(NL), Just(8i64)], 0..3),
        left_pad in any::<bool>(),
    ) {
        let t = tags(&before, &after);
        let built: Vec<RowSpans> = batch
            .iter()
            .map(|(pieces, tail)| {
                let (mut ids, spans) = build_row(pieces, &before, &after);
                ids.extend_from_slice(tail);
                (ids, spans)
            })
            .collect();
        let width = built.iter().map(|(ids, _)| ids.len()).max().unwrap().max(1);
        let (mut flat, mut am, mut spans, mut lengths) = (vec![], vec![], vec![], vec![]);
        for (r, (ids, row_spans)) in built.iter().enumerate() {
            let pad = width - ids.len();
            let (lead, trail) = if left_pad { (pad, 0) } else { (0, pad) };
            flat.extend(std::iter::repeat_n(OPEN, lead));
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(CLOSE, trail));
            am.extend(std::iter::repeat_n(0i64, lead));
            am.extend(std::iter::repeat_n(1i64, ids.len()));
            am.extend(std::iter::repeat_n(0i64, trail));
            lengths.push(ids.len() as i64);
            spans.extend(row_spans.iter().map(|&(s, e)| (r as i64, s, e)));
        }
        let n = built.len() as i64;
        let ids_t = Tensor::from_slice(&flat).reshape([n, width as i64]);
        let am_t = Tensor::from_slice(&am).reshape([n, width as i64]);
        let from_ids = both_paths(&ids_t, &t, Some(&am_t));
        // Spans are offsets into each row's own tokens; shift them past left padding.
        let from_spans = to_vec(&spans_mask(&lengths, width as i64, &spans).unwrap());
        let mut expected = vec![0i64; flat.len()];
        for r in 0..built.len() {
            let len = lengths[r] as usize;
            let lead = if left_pad { width - len } else { 0 };
            expected[r * width + lead..r * width + lead + len]
                .copy_from_slice(&from_spans[r * width..r * width + len]);
        }
        prop_assert_eq!(from_ids, expected);
    }

    /// The CPU scan and the device ops agree on arbitrary ids (stray tags, nesting, padding).
    #[test]
    fn paths_agree_on_arbitrary_ids(
        flat in prop::collection::vec(prop_oneof![Just(OPEN), Just(CLOSE), Just(NL), 0i64..4], 12),
        valid in prop::collection::vec(any::<bool>(), 12),
        before in prop::collection::vec(prop_oneof![Just(NL), 0i64..4], 0..3),
        after in prop::collection::vec(prop_oneof![Just(NL), 0i64..4], 0..3),
    ) {
        let ids = Tensor::from_slice(&flat).reshape([3, 4]);
        let am = Tensor::from_slice(&valid).reshape([3, 4]);
        both_paths(&ids, &tags(&before, &after), Some(&am));
        both_paths(&ids, &tags(&before, &after), None);
    }
}

#[test]
fn same_bits_for_any_thread_count() {
    let n = 64;
    let width = 700;
    let flat: Vec<i64> = (0..n * width)
        .map(|i| match (i * 2654435761usize) % 97 {
            0..=2 => OPEN,
            3..=5 => CLOSE,
            6..=20 => NL,
            k => k as i64,
        })
        .collect();
    let ids = Tensor::from_slice(&flat).reshape([n as i64, width as i64]);
    let t = tags(&[NL], &[NL]);
    let reference = to_vec(&observation_mask(&ids, &t, None, TensorPath::Cpu).unwrap());
    let _pool = crate::parallel::pool_size_lock();
    for threads in [1, 3] {
        crate::parallel::set_num_threads(threads).unwrap();
        let got = observation_mask(&ids, &t, None, TensorPath::Cpu).unwrap();
        assert_eq!(to_vec(&got), reference);
    }
}
