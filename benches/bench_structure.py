"""Parallel-thinking structure: r1kit against two baselines written here from their description.

(a) "official": the approach of the Parallel-R1 training code as its paper and issue describe it:
    a Python loop over the tokens of each row collecting path spans and position ids, then a dense
    L x L float mask per row, filled pair of paths by pair and turned into an additive mask.
(b) "vectorised": the best pure-PyTorch version written for this bench: segment ids by cumsum,
    per-path lengths by scatter, position shifts by cumsum over blocks, and the mask by broadcast
    comparisons of segment ids. It handles one nesting level (what the official data has).

Data: right-padded rows, a prompt of 64-256 tokens (response_start), then ordinary text and
blocks of 2-4 paths (layout A: the summary follows ``</Parallel>``); token ids are Qwen-like.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.nn.attention.flex_attention import create_block_mask

import r1kit
from benches.harness import Case

T = TypeVar("T")


def torch_threads(n: int, fn: Callable[[], T]) -> Callable[[], T]:
    """fn run with torch's intra-op pool at n threads (restored after).

    On this shared 2-core machine torch's OpenMP workers spin against other processes, so the
    vectorised baseline is timed both at torch's default and at one thread; the better is used.
    """

    def run() -> T:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


P, PE, A, AE, S, SE = 151_700, 151_701, 151_702, 151_703, 151_704, 151_705
TAGS = r1kit.ParallelTags(P, PE, A, AE, S, SE)


def make_batch(
    b: int, n: int, blocks: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids [b, n], attention_mask [b, n] (right padding), response_start [b]."""
    rng = random.Random(seed)
    ids = torch.zeros(b, n, dtype=torch.long)
    mask = torch.zeros(b, n, dtype=torch.long)
    starts = torch.zeros(b, dtype=torch.long)
    path_len = max(4, n // (blocks * 12))
    for r in range(b):
        prompt = [rng.randrange(1000, 100_000) for _ in range(rng.randint(64, 256))]
        out = list(prompt)

        def text(k: int) -> list[int]:
            return [rng.randrange(1000, 100_000) for _ in range(k)]

        for _ in range(blocks):
            out += text(rng.randint(path_len // 2, path_len * 2))
            out += [P, *text(rng.randint(0, 2))]
            for _ in range(rng.randint(2, 4)):
                out += [A, *text(rng.randint(path_len // 2, path_len * 2)), AE, 198]
            out += [PE, S, *text(rng.randint(4, path_len)), SE]
        out += text(rng.randint(1, path_len))
        out = out[:n]
        ids[r, : len(out)] = torch.tensor(out)
        mask[r, : len(out)] = 1
        starts[r] = len(prompt)
    return ids, mask, starts


# ---- (a) the official approach ----------------------------------------------------------------


def official_parse(
    ids: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor
) -> tuple[torch.Tensor, list[list[list[tuple[int, int]]]]]:
    """Per-token Python loop: position ids and, per row, each block's path spans [start, end)."""
    positions = []
    spans_per_row = []
    for row, real, rs in zip(ids.tolist(), mask.tolist(), starts.tolist(), strict=True):
        pos = [0] * len(row)
        p = 0
        blocks: list[list[tuple[int, int]]] = []
        paths: list[tuple[int, int]] = []
        in_block, path_start, restart, longest = False, -1, 0, 0
        for i, t in enumerate(row):
            if not real[i]:
                continue
            if i >= rs and t == P and not in_block:
                in_block, paths, path_start = True, [], -1
            elif in_block and t == A:
                if path_start < 0:
                    restart = longest = p
                else:
                    paths.append((path_start, i))
                    longest = max(longest, p)
                path_start, p = i, restart
            elif in_block and t == PE:
                if path_start >= 0:
                    paths.append((path_start, i))
                    longest = max(longest, p)
                    p = longest
                blocks.append(paths)
                in_block = False
            pos[i] = p
            p += 1
        positions.append(pos)
        spans_per_row.append(blocks)
    return torch.tensor(positions), spans_per_row


def official_mask(
    spans_per_row: list[list[list[tuple[int, int]]]], mask: torch.Tensor
) -> torch.Tensor:
    """Dense float mask per row, paths isolated pair by pair, then additive."""
    n = mask.shape[1]
    out = []
    for r, blocks in enumerate(spans_per_row):
        m = torch.tril(torch.ones(n, n))
        for paths in blocks:
            for i, (qs, qe) in enumerate(paths):
                for j, (ks, ke) in enumerate(paths):
                    if i != j:
                        m[qs:qe, ks:ke] = 0
        pad = (mask[r] == 0).nonzero()[:, 0]
        m[:, pad] = 0
        m[pad] = 0
        m[pad, pad] = 1  # pad rows see themselves, as r1kit's
        out.append((1.0 - m) * torch.finfo(torch.float32).min)
    return torch.stack(out)[:, None]


# ---- (b) vectorised PyTorch ---------------------------------------------------------------------


def vectorised_layout(
    ids: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Position ids, block id, global path segment id (-1 outside paths) and real flags."""
    b, n = ids.shape
    real = mask.bool()
    idx = torch.arange(n)
    live = real & (idx[None, :] >= starts[:, None])
    is_p, is_pe, is_a = (ids == P) & live, (ids == PE) & live, (ids == A) & live
    opened = is_p.cumsum(1)
    closed_before = is_pe.cumsum(1) - is_pe.long()
    in_block = opened > closed_before
    block = torch.where(in_block, opened - 1, -1)
    a_count = is_a.cumsum(1)
    a_at_open = torch.where(is_p, a_count, 0).cummax(1).values
    path_k = a_count - a_at_open  # 1-based path number inside the block, 0 in the header
    in_path = in_block & (path_k > 0) & ~is_pe
    nb = int(opened[:, -1].max()) if n else 0
    max_paths = int(path_k.max()) if n else 0
    seg = torch.where(in_path, block * (max_paths + 1) + path_k, -1)
    seqpos = real.long().cumsum(1) - 1
    # Per path segment: real token count.
    width = max(nb * (max_paths + 1), 1)
    lengths = torch.zeros(b, width, dtype=torch.long)
    lengths.scatter_add_(1, seg.clamp(min=0), in_path.long())
    per_block = lengths.view(b, -1, max_paths + 1) if nb else lengths.view(b, 1, -1)
    saved = per_block.sum(-1) - per_block.max(-1).values  # tokens the restarts give back
    saved_before = torch.cat([torch.zeros(b, 1, dtype=torch.long), saved.cumsum(1)], 1)
    # Inside a path: the shift of the blocks before, plus the earlier paths of its own block.
    path_start_seq = torch.where(is_a, seqpos, -1).cummax(1).values
    first_a_seq = torch.full((b, max(nb, 1)), n, dtype=torch.long)
    first_a_seq.scatter_reduce_(1, block.clamp(min=0), torch.where(is_a, seqpos, n), "amin")
    blk = block.clamp(min=0)
    shift_in_path = saved_before.gather(1, blk) + path_start_seq - first_a_seq.gather(1, blk)
    blocks_closed = is_pe.cumsum(1)  # `</Parallel>` and after: its block's saving counts
    shift_out = saved_before.gather(1, blocks_closed.clamp(max=saved_before.shape[1] - 1))
    header = in_block & ~in_path & ~is_pe
    shift_header = saved_before.gather(1, blk)
    shift = torch.where(in_path, shift_in_path, torch.where(header, shift_header, shift_out))
    positions = torch.where(real, seqpos - shift, 0)
    return positions, block, seg, real


def vectorised_mask(block: torch.Tensor, seg: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    n = block.shape[1]
    idx = torch.arange(n)
    causal = idx[None, :, None] >= idx[None, None, :]
    both_paths = (seg[:, :, None] >= 0) & (seg[:, None, :] >= 0)
    clash = (
        both_paths & (block[:, :, None] == block[:, None, :]) & (seg[:, :, None] != seg[:, None, :])
    )
    allowed = causal & real[:, :, None] & real[:, None, :] & ~clash
    allowed |= ~real[:, :, None] & torch.eye(n, dtype=torch.bool)[None]
    return allowed[:, None]


# ---- cases ---------------------------------------------------------------------------------------


def cases() -> list[Case]:
    out: list[Case] = []
    sizes = [(16, 4096, 4), (1, 16384, 8), (64, 2048, 4)]
    for b, n, blocks in sizes:
        ids, mask, starts = make_batch(b, n, blocks, seed=n + b)
        label = f"B={b} L={n} ({blocks} blocks of 2-4 paths)"

        def ours(
            ids: torch.Tensor = ids, mask: torch.Tensor = mask, starts: torch.Tensor = starts
        ) -> r1kit.ParallelLayout:
            return r1kit.parse_parallel(ids, TAGS, attention_mask=mask, response_start=starts)

        layout = ours()

        def check_parse(
            layout: r1kit.ParallelLayout = layout,
            ids: torch.Tensor = ids,
            mask: torch.Tensor = mask,
            starts: torch.Tensor = starts,
        ) -> None:
            assert all(s.kind == "ok" for s in layout.status), layout.status
            official, _ = official_parse(ids, mask, starts)
            vec = vectorised_layout(ids, mask, starts)[0]
            assert torch.equal(layout.position_ids, official)
            assert torch.equal(layout.position_ids, vec)

        out.append(
            Case(
                name=f"parse + position ids, {label}",
                r1kit=ours,
                baselines={
                    "(a) official: Python token loop": lambda ids=ids, mask=mask, starts=starts: (
                        official_parse(ids, mask, starts)
                    ),
                    "(b) vectorised PyTorch": lambda ids=ids, mask=mask, starts=starts: (
                        vectorised_layout(ids, mask, starts)
                    ),
                    "(b) vectorised PyTorch, 1 torch thread": torch_threads(
                        1,
                        lambda ids=ids, mask=mask, starts=starts: vectorised_layout(
                            ids, mask, starts
                        ),
                    ),
                },
                check=check_parse,
            )
        )

        vec = vectorised_layout(ids, mask, starts)

        def check_mask(
            layout: r1kit.ParallelLayout = layout, vec: tuple[torch.Tensor, ...] = vec
        ) -> None:
            assert torch.equal(layout.attention_mask(), vectorised_mask(*vec[1:]))

        out.append(
            Case(
                name=f"dense bool mask [B,1,L,L], {label}",
                r1kit=layout.attention_mask,
                baselines={
                    "torch.ones(bool) (memory-write limit)": lambda b=b, n=n: torch.ones(
                        b, 1, n, n, dtype=torch.bool
                    ),
                    "(b) vectorised PyTorch": lambda vec=vec: vectorised_mask(*vec[1:]),
                    "(b) vectorised PyTorch, 1 torch thread": torch_threads(
                        1, lambda vec=vec: vectorised_mask(*vec[1:])
                    ),
                },
                check=check_mask,
            )
        )

        mod = layout.mask_mod()

        def check_block(
            layout: r1kit.ParallelLayout = layout, mod: object = mod, b: int = b, n: int = n
        ) -> None:
            want = create_block_mask(mod, b, 1, n, n, device="cpu")  # type: ignore[arg-type]
            got = layout.block_mask()
            for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
                assert torch.equal(getattr(got, name), getattr(want, name)), name

        out.append(
            Case(
                name=f"block_mask (FlexAttention), {label}",
                r1kit=layout.block_mask,
                baselines={
                    "create_block_mask(same rule)": lambda mod=mod, b=b, n=n: create_block_mask(
                        mod, b, 1, n, n, device="cpu"
                    ),
                },
                check=check_block,
            )
        )

    # The official mask end to end (parse loop + dense float mask) on the mid-size batch.
    b, n, blocks = 64, 2048, 4
    ids, mask, starts = make_batch(b, n, blocks, seed=n + b)

    def official_end_to_end() -> torch.Tensor:
        return official_mask(official_parse(ids, mask, starts)[1], mask)

    def ours_end_to_end() -> torch.Tensor:
        layout = r1kit.parse_parallel(ids, TAGS, attention_mask=mask, response_start=starts)
        return layout.attention_mask("additive")

    def check_end_to_end() -> None:
        assert torch.equal(ours_end_to_end(), official_end_to_end())

    out.append(
        Case(
            name=f"parse + additive float32 mask, B={b} L={n}",
            r1kit=ours_end_to_end,
            baselines={"(a) official: loop + pairwise dense fill": official_end_to_end},
            check=check_end_to_end,
        )
    )
    return out
