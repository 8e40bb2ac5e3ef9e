"""A plain-Python reading of ``shared/spec/structure.md``: slow and meant to be obviously right.

It parses by recursive descent into a tree, gives positions by recursion over the tree, and
decides attention pair by pair from path membership ("i and j lie in two different paths of the
same block"), a different route from r1kit's one-pass scan and per-token intervals.

Tag ids: P=1 ``<Parallel>``, PE=2 ``</Parallel>``, A=3 ``<Path>``, AE=4 ``</Path>``,
S=5 ``<Summary>``, SE=6 ``</Summary>``; anything else is an ordinary token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

P, PE, A, AE, S, SE = 1, 2, 3, 4, 5, 6
TAG_IDS = (P, PE, A, AE, S, SE)
MAX_DEPTH = 8


@dataclass
class Blk:
    depth: int
    header: list[object] = field(default_factory=list)
    paths: list[list[object]] = field(default_factory=list)
    tail: list[object] = field(default_factory=list)
    closed: bool = False


class _Fail(Exception):
    def __init__(self, kind: str, at: int) -> None:
        self.kind, self.at = kind, at


@dataclass
class RefRow:
    status: tuple[str, int | None]
    positions: list[int]
    allowed: list[list[bool]]
    block_ids: list[int]
    path_ids: list[int]
    depth: list[int]
    paths_per_block: list[int]


def reference(
    ids: list[int], real: list[bool] | None = None, rs: int = 0, structured: bool = True
) -> RefRow:
    n = len(ids)
    real = [True] * n if real is None else real
    toks = [i for i in range(n) if real[i]]

    def tag(i: int) -> int | None:
        return ids[i] if i >= rs and ids[i] in TAG_IDS else None

    cur = 0
    open_starts: list[int] = []

    def block(depth: int) -> Blk:
        nonlocal cur
        if depth == MAX_DEPTH:
            raise _Fail("too_deep", toks[cur])
        b = Blk(depth)
        open_starts.append(toks[cur])
        b.header.append(toks[cur])
        cur += 1
        section, path_open, pending = "header", False, False
        target = b.header
        while cur < len(toks):
            i = toks[cur]
            t = tag(i)
            if t == P:
                pending = False
                child = block(depth + 1)
                target.append(child)
                if not child.closed:
                    return b
                pending = True
            elif t == A:
                if section == "tail":
                    raise _Fail("path_outside_block", i)
                section, path_open, pending = "path", True, False
                target = [i]
                b.paths.append(target)
                cur += 1
            elif t == AE:
                if not (section == "path" and path_open):
                    raise _Fail("stray_close", i)
                path_open = False
                target.append(i)
                cur += 1
            elif t == S:
                if section == "path" and path_open:
                    if not pending:
                        raise _Fail("summary_in_path", i)
                    pending = False  # the summary of the block nested just before (layout A)
                elif section != "tail":
                    section, target = "tail", b.tail
                target.append(i)
                cur += 1
            elif t == PE:
                if len(b.paths) < 2:
                    raise _Fail("single_path", i)
                b.tail.append(i)
                b.closed = True
                cur += 1
                open_starts.pop()
                return b
            else:
                target.append(i)
                cur += 1
        return b

    items: list[object] = []
    status: tuple[str, int | None] = ("ok", None)
    try:
        while cur < len(toks):
            i = toks[cur]
            t = tag(i)
            if t == P:
                b = block(0)
                items.append(b)
                if not b.closed:
                    status = ("truncated", toks[-1] + 1)
                    break
            elif t == A:
                raise _Fail("path_outside_block", i)
            elif t in (AE, PE):
                raise _Fail("stray_close", i)
            else:
                items.append(i)
                cur += 1
    except _Fail as f:
        status = (f.kind, f.at)
        fallback = open_starts[0] if open_starts else f.at
        items = [it for it in items if first_index(it) < fallback]
        items += [i for i in toks if i >= fallback]

    positions = [0] * n
    block_ids = [-1] * n
    path_ids = [-1] * n
    depth = [-1] * n
    blocks: list[Blk] = []

    def assign(seq: list[object], p: int, owner: tuple[int, int, int]) -> int:
        for it in seq:
            if isinstance(it, int):
                positions[it] = p
                block_ids[it], path_ids[it], depth[it] = owner
                p += 1
            else:
                assert isinstance(it, Blk)
                p = assign_block(it, p)
        return p

    def assign_block(b: Blk, p: int) -> int:
        bid = len(blocks)
        blocks.append(b)
        p = assign(b.header, p, (bid, -1, b.depth))
        h = p
        ends = [assign(path, h, (bid, k, b.depth)) for k, path in enumerate(b.paths)]
        p = max(ends, default=h)
        return assign(b.tail, p, (bid, -1, b.depth))

    assign(items, 0, (-1, -1, -1))
    if not structured:
        for k, i in enumerate(toks):
            positions[i] = k

    # Path membership: for every block, which path (if any) each token lies in.
    member: list[dict[int, int]] = [{} for _ in range(n)]  # token -> {block: path}
    for bid, b in enumerate(blocks):
        for k, path in enumerate(b.paths):
            for i in flatten(path):
                member[i][bid] = k

    allowed = [[False] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if not real[i]:
                allowed[i][j] = i == j
            elif j <= i and real[j]:
                clash = structured and any(
                    bid in member[j] and member[j][bid] != k for bid, k in member[i].items()
                )
                allowed[i][j] = not clash
    return RefRow(
        status, positions, allowed, block_ids, path_ids, depth, [len(b.paths) for b in blocks]
    )


def first_index(it: object) -> int:
    if isinstance(it, int):
        return it
    assert isinstance(it, Blk)
    return int(it.header[0])  # type: ignore[arg-type]


def flatten(seq: list[object]) -> list[int]:
    out: list[int] = []
    for it in seq:
        if isinstance(it, int):
            out.append(it)
        else:
            assert isinstance(it, Blk)
            out += flatten(it.header)
            for path in it.paths:
                out += flatten(path)
            out += flatten(it.tail)
    return out
