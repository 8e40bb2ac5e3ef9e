"""Parallel-thinking structure: the spec's worked examples, a plain-Python reference with
hypothesis properties, both tensor paths, FlexAttention tables against torch, a real tiny model,
the GIL, and bad inputs."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.nn.attention.flex_attention import create_block_mask

import r1kit
from gil import intervals_overlap
from r1kit.structure import ParallelLayout
from structure_reference import AE, MAX_DEPTH, PE, SE, TAG_IDS, A, P, S, reference

TAGS = r1kit.ParallelTags(P, PE, A, AE, S, SE)
WORDS = {"P": P, "p": PE, "A": A, "a": AE, "S": S, "s": SE, "_": 0}


def row(text: str) -> list[int]:
    """`x x P A x a ...` -> ids (P=<Parallel> p=</Parallel> A=<Path> a=</Path> S s summary)."""
    return [WORDS[w] if w in WORDS else 9 if w in "xyzqn" else int(w) for w in text.split()]


def parse(ids: list[int] | list[list[int]], **kw: object) -> ParallelLayout:
    return r1kit.parse_parallel(torch.tensor(ids), TAGS, **kw)  # type: ignore[arg-type]


def blocked(rows: range, cols: range) -> set[tuple[int, int]]:
    return {(i, j) for i in rows for j in cols}


def expected_mask(
    n: int, refused: set[tuple[int, int]], real: list[bool] | None = None
) -> torch.Tensor:
    real = real or [True] * n
    m = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            m[i, j] = (i == j) if not real[i] else (j <= i and real[j] and (i, j) not in refused)
    return m


# ---- the spec's worked examples ----------------------------------------------------------------


def test_example_1(tensor_path: str) -> None:
    layout = parse([row("x x P A x a A x x a p S x s")])
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]]
    assert layout.position_ids.dtype == torch.int64
    assert torch.equal(
        layout.attention_mask()[0, 0], expected_mask(14, blocked(range(6, 10), range(3, 6)))
    )
    assert layout.status == [("ok", None)]
    assert layout.block_ids.tolist() == [[-1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1]]
    assert layout.path_ids.tolist() == [[-1, -1, -1, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1, -1]]
    assert layout.depth.dtype == torch.int32


def test_example_2_tokens_between_paths(tensor_path: str) -> None:
    layout = parse(row("P A x a n A y a p"))
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 4, 1, 2, 3, 5]]
    assert torch.equal(
        layout.attention_mask()[0, 0], expected_mask(9, blocked(range(5, 8), range(1, 5)))
    )


def test_example_3_left_padding(tensor_path: str) -> None:
    mask = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    layout = parse(
        [row("_ _ q q P A x a A y a p")], attention_mask=torch.tensor([mask]), response_start=4
    )
    assert layout.position_ids.tolist() == [[0, 0, 0, 1, 2, 3, 4, 5, 3, 4, 5, 6]]
    real = [bool(v) for v in mask]
    want = expected_mask(12, blocked(range(8, 11), range(5, 8)), real)
    got = layout.attention_mask()[0, 0]
    assert torch.equal(got, want)
    assert got[0].tolist() == [True] + [False] * 11 and got[1, 1] and got[1].sum() == 1
    assert not got[2:, :2].any()


def test_example_4_truncated(tensor_path: str) -> None:
    layout = parse(row("P A x a A y"))
    assert layout.status == [("truncated", 6)]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 1, 2]]
    assert torch.equal(
        layout.attention_mask()[0, 0], expected_mask(6, blocked(range(4, 6), range(1, 4)))
    )


def test_example_5_tags_in_the_prompt(tensor_path: str) -> None:
    layout = parse(row("P q A q P A x a A y a p"), response_start=4)
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7, 8]]
    assert layout.block_ids[0, :4].tolist() == [-1] * 4
    assert layout.stats()[0].n_blocks == 1


def test_layout_b_nesting_and_three_paths(tensor_path: str) -> None:
    b = parse(row("P A x a A x x a S y s p z"))
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert b.blocks(0)[0]["summary"] == (8, 10) and b.blocks(0)[0]["summary_inside"]
    nested = parse(row("P A P A x a A y a p a A z a p"))
    assert nested.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 1, 2, 3, 8]]
    assert nested.depth.tolist() == [[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]]
    refused = blocked(range(6, 9), range(3, 6)) | blocked(range(11, 14), range(1, 11))
    assert torch.equal(nested.attention_mask()[0, 0], expected_mask(15, refused))
    three = parse(row("P A x a A y y a A z a p"))
    assert three.position_ids.tolist() == [[0, 1, 2, 3, 1, 2, 3, 4, 1, 2, 3, 5]]
    assert three.stats()[0].paths_per_block == [3]
    refused = blocked(range(4, 8), range(1, 4)) | blocked(range(8, 11), range(1, 8))
    assert torch.equal(three.attention_mask()[0, 0], expected_mask(12, refused))


ERRORS = [
    ("x a x", "stray_close", 1),
    ("x p x", "stray_close", 1),
    ("P A x a a p", "stray_close", 4),
    ("x A x a", "path_outside_block", 1),
    ("P A x a A x a S s A p", "path_outside_block", 9),
    ("P A x S s a p", "summary_in_path", 3),
    ("P A x a p", "single_path", 4),
    (" ".join(["P A"] * MAX_DEPTH) + " P", "too_deep", 2 * MAX_DEPTH),
]


@pytest.mark.parametrize(("text", "kind", "index"), ERRORS)
def test_structural_errors(text: str, kind: str, index: int, tensor_path: str) -> None:
    ids = row(text)
    layout = parse([ids])
    assert layout.status[0] == (kind, index)
    n = len(ids)
    assert layout.position_ids[0].tolist() == list(range(n))  # the whole row falls back
    assert torch.equal(layout.attention_mask()[0, 0], expected_mask(n, set()))
    with pytest.raises(r1kit.StructureError, match=rf"row 0: {kind} at token {index}"):
        parse([ids], on_error="raise")


def test_error_keeps_earlier_blocks() -> None:
    layout = parse(row("P A x a A y a p x P A z a p x"))
    assert layout.status == [("single_path", 13)]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    assert layout.stats()[0].n_blocks == 1


def test_causal_variant_keeps_status_and_stats(tensor_path: str) -> None:
    ids = [row("x P A x a A y y a p S x s")]
    seen = parse(ids, structured=False)
    assert seen.position_ids.tolist() == [list(range(13))]
    assert torch.equal(seen.attention_mask()[0, 0], expected_mask(13, set()))
    unseen = parse(ids)
    assert seen.status == unseen.status
    assert seen.stats() == unseen.stats()
    assert not seen.structured and unseen.structured


def test_stats() -> None:
    layout = parse([row("x x P A x a A y a p x x P A x a A y a A z a p x x")])
    s = layout.stats()[0]
    assert (s.n_blocks, s.paths_per_block, s.tokens_in_paths, s.response_tokens) == (
        2,
        [2, 3],
        15,
        25,
    )
    assert s.block_start_fraction == [2 / 25, 12 / 25]
    padded = parse(
        [row("_ q P A x a A y a p")], attention_mask=torch.tensor([[0] + [1] * 9]), response_start=2
    )
    assert padded.stats()[0].block_start_fraction == [0.0]
    assert padded.stats()[0].response_tokens == 8


def test_additive_masks(tensor_path: str) -> None:
    layout = parse([row("x P A x a A y a p")])
    allowed = layout.attention_mask()
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        add = layout.attention_mask("additive", dtype)
        assert add.dtype == dtype
        assert torch.equal(add == 0, allowed)
        assert torch.all(add[~allowed] == torch.finfo(dtype).min)
    assert layout.attention_mask("additive").dtype == torch.float32


def test_memory_budget() -> None:
    layout = parse(torch.zeros(2, 64, dtype=torch.long).tolist())
    with pytest.raises(r1kit.ArgumentError, match="block_mask"):
        layout.attention_mask(max_bytes=2 * 64 * 64 - 1)
    assert layout.attention_mask(max_bytes=2 * 64 * 64).shape == (2, 1, 64, 64)
    with pytest.raises(r1kit.ArgumentError, match="block_mask"):
        layout.attention_mask("additive", max_bytes=2 * 64 * 64 * 3)
    before = r1kit.structure.get_mask_budget()
    try:
        r1kit.structure.set_mask_budget(100)
        with pytest.raises(r1kit.ArgumentError, match="a budget of 100 bytes"):
            layout.attention_mask()
    finally:
        r1kit.structure.set_mask_budget(before)


# ---- reference and properties -------------------------------------------------------------------


def well_formed(draw: st.DrawFn, depth: int) -> list[int]:
    """One response item list: text and blocks (layout A or B, gaps after </Path>)."""
    out: list[int] = []
    for _ in range(draw(st.integers(0, 3))):
        if depth > 0 and draw(st.booleans()):
            out.append(P)
            out += [9] * draw(st.integers(0, 1))
            for _ in range(draw(st.integers(2, 3))):
                out.append(A)
                out += well_formed(draw, depth - 1)
                out.append(AE)
                out += [8] * draw(st.integers(0, 1))
            inside = draw(st.booleans())
            if inside:
                out += [S, 9, SE]
            out.append(PE)
            if not inside and draw(st.booleans()):
                out += [S, 9, SE]
        else:
            out += [9] * draw(st.integers(1, 3))
    return out


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[list[int]], list[list[bool]], list[int]]:
    """Rows (well formed, cut short, or token soup) padded left or right to one length."""
    rows: list[list[int]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["good", "cut", "soup"]))
        prompt = draw(st.lists(st.sampled_from([*TAG_IDS, 9]), max_size=3))
        if kind == "soup":
            body = draw(st.lists(st.sampled_from([*TAG_IDS, 9, 9]), max_size=30))
        else:
            body = well_formed(draw, 2)
            if kind == "cut":
                body = body[: draw(st.integers(0, len(body)))]
        rows.append(prompt + body)
    n = max(len(r) for r in rows) + draw(st.integers(0, 2))
    ids, real, starts = [], [], []
    for r in rows:
        pad = n - len(r)
        prompt_len = 0 if not r else draw(st.integers(0, min(3, len(r))))
        if draw(st.booleans()):  # left padding
            ids.append([0] * pad + r)
            real.append([False] * pad + [True] * len(r))
            starts.append(pad + prompt_len)
        else:
            ids.append(r + [0] * pad)
            real.append([True] * len(r) + [False] * pad)
            starts.append(prompt_len)
    return ids, real, starts


def check_against_reference(
    layout: ParallelLayout,
    ids: list[list[int]],
    real: list[bool] | list[list[bool]],
    starts: list[int],
    structured: bool,
) -> None:
    mask = layout.attention_mask()
    for b, r in enumerate(ids):
        ref = reference(r, real[b], starts[b], structured)  # type: ignore[arg-type]
        assert layout.status[b] == ref.status
        assert layout.position_ids[b].tolist() == ref.positions
        assert layout.block_ids[b].tolist() == ref.block_ids
        assert layout.path_ids[b].tolist() == ref.path_ids
        assert layout.depth[b].tolist() == ref.depth
        assert layout.stats()[b].paths_per_block == ref.paths_per_block
        assert mask[b, 0].tolist() == ref.allowed


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=batches(), structured=st.booleans())
def test_matches_reference(
    batch: tuple[list[list[int]], list[list[bool]], list[int]], structured: bool, tensor_path: str
) -> None:
    ids, real, starts = batch
    layout = r1kit.parse_parallel(
        torch.tensor(ids, dtype=torch.long),
        TAGS,
        attention_mask=torch.tensor(real, dtype=torch.bool),
        response_start=torch.tensor(starts),
        structured=structured,
    )
    check_against_reference(layout, ids, real, starts, structured)


@settings(max_examples=60, deadline=None)
@given(batch=batches())
def test_paths_agree(batch: tuple[list[list[int]], list[list[bool]], list[int]]) -> None:
    ids, real, starts = batch
    args = (
        torch.tensor(ids, dtype=torch.long),
        TAGS,
        torch.tensor(real, dtype=torch.bool),
        torch.tensor(starts),
    )
    cpu = r1kit.parse_parallel(*args, path="cpu")
    dev = r1kit.parse_parallel(*args, path="device")
    for name in ("position_ids", "block_ids", "path_ids", "depth"):
        assert torch.equal(getattr(cpu, name), getattr(dev, name))
    assert torch.equal(cpu.attention_mask(), dev.attention_mask())
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(
            cpu.attention_mask("additive", dtype), dev.attention_mask("additive", dtype)
        )


@pytest.mark.parametrize("mask_dtype", [None, torch.bool, torch.int64])
@pytest.mark.parametrize("structured", [True, False])
def test_large_batches_equal_row_by_row_parses(
    mask_dtype: torch.dtype | None, structured: bool
) -> None:
    """Batches past the serial threshold (rows parsed in the pool, the mask converted per row)
    give, row for row, what a one-row call (parsed on the caller's thread) gives."""
    g = torch.Generator().manual_seed(7)
    b, n = 12, 4096  # 49k tokens: parsed in parallel
    ids = torch.randint(20, 1000, (b, n), generator=g)
    real = torch.ones(b, n, dtype=torch.bool)
    starts = torch.randint(0, 64, (b,), generator=g)
    soup = torch.tensor(TAG_IDS)
    for i in range(b):
        at = int(starts[i]) + 8
        for _ in range(3):  # three blocks of 2-3 paths, some rows cut or with stray tags
            k = int(torch.randint(2, 4, (1,), generator=g))
            ids[i, at] = P
            for p in range(k):
                ids[i, at + 1 + 40 * p] = A
                ids[i, at + 30 + 40 * p] = AE
            ids[i, at + 1 + 40 * k] = PE
            at += 60 + 40 * k + int(torch.randint(0, 400, (1,), generator=g))
        if i % 4 == 1:  # token soup in the tail
            tail = torch.randint(0, len(TAG_IDS), (200,), generator=g)
            ids[i, n - 200 :] = soup[tail]
        if i % 3 == 2:  # padding on the left or right
            pad = int(torch.randint(1, 300, (1,), generator=g))
            if i % 2:
                real[i, :pad] = False
                starts[i] = max(int(starts[i]), pad)
            else:
                real[i, n - pad :] = False
    mask = None if mask_dtype is None else real.to(mask_dtype)
    whole = r1kit.parse_parallel(
        ids, TAGS, attention_mask=mask, response_start=starts, structured=structured
    )
    kinds = {s.kind for s in whole.status}
    assert "ok" in kinds and len(kinds) > 1  # the batch mixes good and broken rows
    for i in range(b):
        one = r1kit.parse_parallel(
            ids[i : i + 1],
            TAGS,
            attention_mask=None if mask is None else mask[i : i + 1],
            response_start=int(starts[i]),
            structured=structured,
        )
        assert whole.status[i] == one.status[0]
        for name in ("position_ids", "block_ids", "path_ids", "depth"):
            assert torch.equal(getattr(whole, name)[i], getattr(one, name)[0]), (i, name)
        assert whole.stats()[i] == one.stats()[0]
    dense = whole.attention_mask()
    for i in (1, 2):  # soup, padding
        single = r1kit.parse_parallel(
            ids[i : i + 1],
            TAGS,
            attention_mask=None if mask is None else mask[i : i + 1],
            response_start=int(starts[i]),
            structured=structured,
        )
        assert torch.equal(dense[i], single.attention_mask()[0])


def test_dtypes_of_ids_and_mask() -> None:
    ids = row("x P A x a A y a p")
    base = parse([ids])
    for dt in (torch.int32, torch.int16, torch.uint8):
        other = r1kit.parse_parallel(torch.tensor([ids], dtype=dt), TAGS)
        assert torch.equal(other.position_ids, base.position_ids)
    for mdt in (torch.bool, torch.int64, torch.int32, torch.uint8):
        m = r1kit.parse_parallel(
            torch.tensor([ids]), TAGS, attention_mask=torch.ones(1, 9, dtype=mdt)
        )
        assert torch.equal(m.attention_mask(), base.attention_mask())
    one_d = r1kit.parse_parallel(torch.tensor(ids), TAGS)
    assert one_d.position_ids.shape == (1, 9)


# ---- FlexAttention ------------------------------------------------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=batches(), block_size=st.sampled_from([1, 2, 3, 4, 8, 128]), structured=st.booleans())
def test_block_mask_equals_create_block_mask(
    batch: tuple[list[list[int]], list[list[bool]], list[int]],
    block_size: int,
    structured: bool,
    tensor_path: str,
) -> None:
    ids, real, starts = batch
    assume(len(ids[0]) > 0)  # create_block_mask has no L = 0
    layout = r1kit.parse_parallel(
        torch.tensor(ids, dtype=torch.long),
        TAGS,
        attention_mask=torch.tensor(real, dtype=torch.bool),
        response_start=torch.tensor(starts),
        structured=structured,
    )
    dense = torch.tensor(
        [reference(r, real[b], starts[b], structured).allowed for b, r in enumerate(ids)]
    )

    def rule(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return dense[b, q, kv]

    n = len(ids[0])
    want = create_block_mask(rule, len(ids), 1, n, n, device="cpu", BLOCK_SIZE=block_size)
    got = layout.block_mask(block_size)
    assert torch.equal(got.to_dense(), want.to_dense())
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    # The mask_mod reproduces the rule pair by pair.
    mod = layout.mask_mod()
    b, q, kv = torch.meshgrid(
        torch.arange(len(ids)), torch.arange(n), torch.arange(n), indexing="ij"
    )
    assert torch.equal(mod(b, torch.zeros_like(b), q, kv), dense)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: object) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager (uncompiled) flex on CPU warns that it is slow
        out = flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True)  # type: ignore[arg-type]
    assert isinstance(out, torch.Tensor)
    return out


def test_flex_attention_equals_sdpa() -> None:
    ids = [
        row("_ _ x P A x a n A y y a A z a p S x s x"),
        row("x P A P A x a A y a p a A z z a p x _ _"),
    ]
    real = torch.tensor([[0, 0] + [1] * 18, [1] * 18 + [0, 0]])
    layout = r1kit.parse_parallel(torch.tensor(ids), TAGS, attention_mask=real)
    torch.manual_seed(0)
    q = torch.randn(2, 4, 20, 16)
    k, v = torch.randn(2, 2, 20, 16), torch.randn(2, 2, 20, 16)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=layout.attention_mask(), enable_gqa=True
    )
    for bs in (4, 8, 128):
        assert torch.allclose(flex(q, k, v, layout.block_mask(bs)), want, atol=1e-5)


# ---- a real model -------------------------------------------------------------------------------


def tiny_qwen(impl: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM._from_config(cfg, attn_implementation=impl, torch_dtype=dtype)
    return model.eval()


# prefix `x y P`, path 1 `A x a n`, path 2 `A y z a`, then `p S x s`
MODEL_IDS = [11, 12, P, A, 13, AE, 14, A, 15, 16, AE, PE, S, 17, SE]
PATH2 = slice(7, 11)


def logits(model: torch.nn.Module, ids: list[int], **kw: object) -> torch.Tensor:
    out = model(input_ids=torch.tensor([ids]), **kw).logits
    assert isinstance(out, torch.Tensor)
    return out[0]


@pytest.mark.parametrize(
    ("impl", "kind", "dtype", "atol"),
    [
        ("sdpa", "bool", torch.float32, 1e-5),
        ("eager", "additive", torch.float32, 1e-5),
        ("sdpa", "bool", torch.bfloat16, 2e-2),
        ("eager", "additive", torch.bfloat16, 2e-2),
    ],
)
def test_model_path_sees_only_prefix(impl: str, kind: str, dtype: torch.dtype, atol: float) -> None:
    model = tiny_qwen(impl, dtype)
    layout = parse([MODEL_IDS])
    mask = layout.attention_mask(kind, None if kind == "bool" else dtype)  # type: ignore[arg-type]
    with torch.no_grad():
        full = logits(
            model, MODEL_IDS, attention_mask=mask, position_ids=layout.position_ids
        ).float()
        alone = logits(model, MODEL_IDS[:3] + MODEL_IDS[PATH2]).float()
        causal = logits(model, MODEL_IDS).float()
    assert torch.allclose(full[PATH2], alone[3:], atol=atol)
    assert torch.allclose(full[:7], causal[:7], atol=atol)  # the prefix and path 1 are unchanged
    assert not torch.allclose(full[PATH2], causal[PATH2], atol=atol)  # the mask does something


def test_model_flex_equals_sdpa_and_backward() -> None:
    from transformers import AttentionInterface

    layout = parse([MODEL_IDS])
    block_mask = layout.block_mask(4)

    def flex_fn(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: object,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kw: object,
    ) -> tuple[torch.Tensor, None]:
        from torch.nn.attention.flex_attention import flex_attention

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = flex_attention(
                query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=True
            )
        assert isinstance(out, torch.Tensor)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("r1kit_test_flex", flex_fn)
    mask, pos = layout.attention_mask(), layout.position_ids
    with torch.no_grad():
        want = logits(tiny_qwen("sdpa"), MODEL_IDS, attention_mask=mask, position_ids=pos)
        got = logits(tiny_qwen("r1kit_test_flex"), MODEL_IDS, attention_mask=mask, position_ids=pos)
    assert torch.allclose(got, want, atol=1e-5)
    model = tiny_qwen("sdpa").train()
    out = logits(model, MODEL_IDS, attention_mask=mask, position_ids=pos)
    out.logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ---- threads ------------------------------------------------------------------------------------


def test_gil_released(restore_threads: None) -> None:
    r1kit.set_num_threads(1)
    ids = torch.tensor(row("x P A x x a A y y a A z a p x") * 6000).reshape(1, -1).repeat(32, 1)
    layout = r1kit.parse_parallel(ids[:, :4096], TAGS)  # its mask: 32 x 4096 x 4096 bytes
    assert intervals_overlap(lambda: r1kit.parse_parallel(ids, TAGS))
    assert intervals_overlap(lambda: layout.attention_mask())


# ---- bad input ----------------------------------------------------------------------------------


def test_bad_inputs() -> None:
    ids = torch.tensor([row("x P A x a A y a p")])
    with pytest.raises(r1kit.DtypeError, match="`input_ids`"):
        r1kit.parse_parallel(ids.float(), TAGS)
    with pytest.raises(r1kit.ShapeError, match="`input_ids`"):
        r1kit.parse_parallel(ids[None], TAGS)
    with pytest.raises(r1kit.ShapeError, match="`input_ids`"):
        r1kit.parse_parallel(torch.zeros(0, 5, dtype=torch.long), TAGS)
    with pytest.raises(r1kit.ShapeError, match="`attention_mask`"):
        r1kit.parse_parallel(ids, TAGS, attention_mask=torch.ones(1, 8))
    with pytest.raises(r1kit.DtypeError, match="`attention_mask`"):
        r1kit.parse_parallel(ids, TAGS, attention_mask=torch.ones(1, 9))
    with pytest.raises(r1kit.DeviceError, match="`attention_mask`"):
        r1kit.parse_parallel(
            ids, TAGS, attention_mask=torch.ones(1, 9, dtype=torch.long, device="meta")
        )
    with pytest.raises(
        r1kit.ArgumentError, match=r"`response_start`: expected an index in \[0, 9\]"
    ):
        r1kit.parse_parallel(ids, TAGS, response_start=10)
    with pytest.raises(r1kit.ArgumentError, match="`response_start`"):
        r1kit.parse_parallel(ids, TAGS, response_start=-1)
    with pytest.raises(r1kit.ArgumentError, match=r"`response_start\[1\]`"):
        r1kit.parse_parallel(ids.repeat(2, 1), TAGS, response_start=torch.tensor([0, 12]))
    with pytest.raises(r1kit.ShapeError, match="`response_start`"):
        r1kit.parse_parallel(ids, TAGS, response_start=torch.tensor([0, 1]))
    with pytest.raises(r1kit.DtypeError, match="`response_start`"):
        r1kit.parse_parallel(ids, TAGS, response_start=torch.tensor([0.5]))
    with pytest.raises(r1kit.ArgumentTypeError, match="`response_start`"):
        r1kit.parse_parallel(ids, TAGS, response_start="3")  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentError, match="`path_end`"):
        r1kit.ParallelTags(1, 2, 3, 3, 5, 6)
    with pytest.raises(r1kit.ArgumentError, match="`summary`"):
        r1kit.ParallelTags(1, 2, 3, 4, -5, 6)
    with pytest.raises(r1kit.ArgumentError, match="`input_ids`: expected non-negative"):
        r1kit.parse_parallel(torch.tensor([[1, -3, 4]]), TAGS)
    with pytest.raises(r1kit.ArgumentError, match="`on_error`"):
        r1kit.parse_parallel(ids, TAGS, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentTypeError, match="`input_ids`"):
        r1kit.parse_parallel([[1, 2]], TAGS)  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentTypeError, match="`tags`"):
        r1kit.parse_parallel(ids, (1, 2, 3, 4, 5, 6))  # type: ignore[arg-type]
    layout = r1kit.parse_parallel(ids, TAGS)
    with pytest.raises(r1kit.ArgumentError, match="`kind`"):
        layout.attention_mask("float")  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentError, match="`dtype`"):
        layout.attention_mask("additive", torch.int32)
    with pytest.raises(r1kit.ArgumentError, match="`block_size`"):
        layout.block_mask(0)
    with pytest.raises(r1kit.ArgumentError, match="`row`"):
        layout.blocks(1)


def test_tiny_lengths(tensor_path: str) -> None:
    empty = r1kit.parse_parallel(torch.zeros(2, 0, dtype=torch.long), TAGS)
    assert empty.position_ids.shape == (2, 0)
    assert empty.attention_mask().shape == (2, 1, 0, 0)
    assert empty.status == [("ok", None)] * 2
    one = r1kit.parse_parallel(torch.tensor([[P], [9]]), TAGS)
    assert one.status == [("truncated", 1), ("ok", None)]
    assert one.attention_mask().tolist() == [[[[True]]], [[[True]]]]
    assert one.block_mask(128).to_dense().tolist() == [[[[1]]], [[[1]]]]
    pads = r1kit.parse_parallel(torch.tensor([[P]]), TAGS, attention_mask=torch.tensor([[0]]))
    assert pads.status == [("ok", None)] and pads.attention_mask().tolist() == [[[[True]]]]


def test_from_tokenizer() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(r1kit.structure.DEFAULT_TAG_SPELLING))
    tags = r1kit.ParallelTags.from_tokenizer(tok)
    assert tags.ids() == (3, 4, 5, 6, 7, 8)
    ids = tok.encode("hello <Parallel><Path> world </Path><Path> hello </Path></Parallel>").ids
    assert r1kit.parse_parallel(torch.tensor(ids), tags).stats()[0].paths_per_block == [2]

    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    assert r1kit.ParallelTags.from_tokenizer(hf) == tags
    plain = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(r1kit.ArgumentError, match="'<Parallel>' to be one token"):
        r1kit.ParallelTags.from_tokenizer(plain)
    with pytest.raises(r1kit.ArgumentTypeError, match="`tokenizer`"):
        r1kit.ParallelTags.from_tokenizer(object())


def test_readme_section() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Parallel-thinking structure") :]
    namespace: dict[str, object] = {}
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        exec(compile(block, "README.md", "exec"), namespace)
    layout = namespace["layout"]
    assert isinstance(layout, ParallelLayout)
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]]
    assert layout.status == [("ok", None)]
    assert layout.stats()[0].block_start_fraction == [0.0]
    additive = namespace["additive"]
    assert isinstance(additive, torch.Tensor) and additive.dtype == torch.bfloat16
