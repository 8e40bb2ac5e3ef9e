"""Parallel-thinking structure (Parallel-R1): parse, position ids, attention masks, stats.

One definition (``shared/spec/structure.md``) for SFT, RL and rollout: the paths of a
``<Parallel>`` block cannot see each other and all restart at the same position; tokens between
paths belong to the path before them; tags in the prompt are ordinary tokens; malformed rows get a
status and fall back to causal text instead of crashing. The parse is O(L) per row; the dense
``[B, 1, L, L]`` mask and the FlexAttention ``BlockMask`` are views built on demand.

Example:
    >>> import torch
    >>> import r1kit
    >>> tags = r1kit.ParallelTags(1, 2, 3, 4, 5, 6)  # <Parallel> </Parallel> <Path> ...
    >>> ids = torch.tensor([[9, 1, 3, 9, 4, 3, 9, 9, 4, 2, 9]])
    >>> layout = r1kit.parse_parallel(ids, tags)
    >>> layout.position_ids
    tensor([[0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7]])
    >>> layout.status
    [RowStatus(kind='ok', at=None)]
    >>> layout.attention_mask()[0, 0, 5, 2:5]  # path 2 does not see path 1
    tensor([False, False, False])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

import torch

from r1kit import _core
from r1kit.errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

__all__ = [
    "DEFAULT_TAG_SPELLING",
    "ParallelLayout",
    "ParallelTags",
    "RowStats",
    "RowStatus",
    "get_mask_budget",
    "parse_parallel",
    "set_mask_budget",
]

DEFAULT_TAG_SPELLING = (
    "<Parallel>",
    "</Parallel>",
    "<Path>",
    "</Path>",
    "<Summary>",
    "</Summary>",
)
"""The tags' text, in ``ParallelTags`` field order."""

_mask_budget = 4 << 30


def set_mask_budget(max_bytes: int) -> None:
    """Sets the default memory budget of :meth:`ParallelLayout.attention_mask` (4 GiB at start).

    Args:
        max_bytes: Largest dense mask, in bytes, that ``attention_mask`` builds without an explicit
            ``max_bytes``.

    Raises:
        ArgumentError: If ``max_bytes`` is negative.

    Example:
        >>> from r1kit import structure
        >>> structure.set_mask_budget(8 << 30); structure.get_mask_budget()
        8589934592
        >>> structure.set_mask_budget(4 << 30)
    """
    global _mask_budget
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise ArgumentTypeError(f"`max_bytes`: expected an int, got {type(max_bytes).__name__}")
    if max_bytes < 0:
        raise ArgumentError(f"`max_bytes`: expected a non-negative byte count, got {max_bytes}")
    _mask_budget = max_bytes


def get_mask_budget() -> int:
    """Returns the default memory budget of dense masks, in bytes.

    Example:
        >>> r1kit.structure.get_mask_budget() == 4 << 30
        True
    """
    return _mask_budget


@dataclass(frozen=True)
class ParallelTags:
    """The token ids of the six tags (distinct, non-negative).

    Args:
        parallel: Id of ``<Parallel>``.
        parallel_end: Id of ``</Parallel>``.
        path: Id of ``<Path>``.
        path_end: Id of ``</Path>``.
        summary: Id of ``<Summary>``.
        summary_end: Id of ``</Summary>``.

    Raises:
        ArgumentError: If an id is negative or two ids are equal (the message names the field).

    Example:
        >>> r1kit.ParallelTags(1, 2, 3, 4, 5, 6).path
        3
    """

    parallel: int
    parallel_end: int
    path: int
    path_end: int
    summary: int
    summary_end: int

    def __post_init__(self) -> None:
        _core.check_parallel_tags(self.ids())

    def ids(self) -> tuple[int, int, int, int, int, int]:
        """The six ids in field order."""
        return (
            self.parallel,
            self.parallel_end,
            self.path,
            self.path_end,
            self.summary,
            self.summary_end,
        )

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, spelling: tuple[str, str, str, str, str, str] = DEFAULT_TAG_SPELLING
    ) -> ParallelTags:
        """Looks the tags up in a Hugging Face tokenizer or a ``tokenizers.Tokenizer``.

        Each tag must encode to exactly one token (add them as special tokens first).

        Args:
            tokenizer: A ``transformers`` tokenizer or a ``tokenizers.Tokenizer``.
            spelling: The tags' text, in field order.

        Returns:
            The tags' ids.

        Raises:
            ArgumentError: If a tag is not a single token of this tokenizer.
            ArgumentTypeError: If ``tokenizer`` has no ``encode`` method.
        """
        if not hasattr(tokenizer, "encode"):
            raise ArgumentTypeError(
                "`tokenizer`: expected a transformers tokenizer or a tokenizers.Tokenizer, "
                f"got {type(tokenizer).__name__}"
            )
        if len(spelling) != 6:
            raise ArgumentError(f"`spelling`: expected 6 tag strings, got {len(spelling)}")
        ids: list[int] = []
        for text in spelling:
            encoded = tokenizer.encode(text, add_special_tokens=False)
            found = list(getattr(encoded, "ids", encoded))
            if len(found) != 1:
                raise ArgumentError(
                    f"`tokenizer`: expected {text!r} to be one token, got {len(found)} tokens "
                    f"{found} (add the tags as special tokens)"
                )
            ids.append(int(found[0]))
        return cls(*ids)


class RowStatus(NamedTuple):
    """A row's parse status.

    ``kind`` is ``ok``, ``truncated`` or a structural error (``stray_close``,
    ``path_outside_block``, ``summary_in_path``, ``too_deep``, ``single_path``); ``at`` is the
    token index where it was found (for ``truncated``: one past the last real token; ``None`` for
    ``ok``).
    """

    kind: str
    at: int | None


@dataclass(frozen=True)
class RowStats:
    """Per-row structure statistics (blocks kept after any causal fallback).

    Attributes:
        status: The row's status kind.
        n_blocks: Blocks at every depth.
        n_top_level_blocks: Blocks not nested in another block.
        paths_per_block: Paths of each block, in order of their ``<Parallel>``.
        block_depth: Nesting depth of each block (0 = top level).
        tokens_in_paths: Real tokens inside a path (any depth).
        response_tokens: Real tokens of the response.
        block_start_fraction: Each block's ``<Parallel>`` as a fraction of the response
            (real tokens before it / response tokens): early exploration vs late verification.
    """

    status: str
    n_blocks: int
    n_top_level_blocks: int
    paths_per_block: list[int]
    block_depth: list[int]
    tokens_in_paths: int
    response_tokens: int
    block_start_fraction: list[float]


OnError = Literal["causal", "raise"]
MaskKind = Literal["bool", "additive"]


class ParallelLayout:
    """The parse of a batch: per-token tensors, per-row status, and mask views.

    Built by :func:`parse_parallel`. Per-token tensors are ``[B, L]`` on the input's device:
    ``position_ids`` (int64; pass them with the mask, never with ``attention_mask=None``),
    ``block_ids``, ``path_ids`` and ``depth`` (int32, -1 where not applicable: ``block_ids`` is
    the innermost block, numbered per row; ``path_ids`` the path within it).
    """

    def __init__(self, core: _core.ParallelLayoutCore, position_ids: torch.Tensor) -> None:
        self._core = core
        self.position_ids = position_ids
        self._ids: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._status: list[RowStatus] | None = None

    def _id_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Built on first use from the runs the parse kept (a few per block): the parse itself
        # writes only the position ids per token.
        if self._ids is None:
            self._ids = self._core.id_tensors()
        return self._ids

    @property
    def block_ids(self) -> torch.Tensor:
        """int32 ``[B, L]``: the innermost block (numbered per row), -1 outside blocks and pads."""
        return self._id_tensors()[0]

    @property
    def path_ids(self) -> torch.Tensor:
        """int32 ``[B, L]``: the path within the innermost block, -1 where not in a path."""
        return self._id_tensors()[1]

    @property
    def depth(self) -> torch.Tensor:
        """int32 ``[B, L]``: the depth of the innermost block, -1 outside blocks and pads."""
        return self._id_tensors()[2]

    @property
    def status(self) -> list[RowStatus]:
        """Per row: the :class:`RowStatus` (``kind``, token ``at``)."""
        if self._status is None:
            self._status = [RowStatus(kind, index) for kind, index in self._core.status()]
        return self._status

    @property
    def structured(self) -> bool:
        """False for the causal ("Seen") variant."""
        return self._core.structured

    @property
    def device(self) -> torch.device:
        """Device of the input ids and of every tensor this layout returns."""
        return self.position_ids.device

    def __repr__(self) -> str:
        b, n = self._core.batch_size, self._core.seq_len
        bad = sum(s.kind != "ok" for s in self.status)
        return f"ParallelLayout(batch={b}, seq_len={n}, structured={self.structured}, not_ok={bad})"

    def attention_mask(
        self,
        kind: MaskKind = "bool",
        dtype: torch.dtype | None = None,
        max_bytes: int | None = None,
    ) -> torch.Tensor:
        """The dense ``[B, 1, L, L]`` mask on the input's device.

        Args:
            kind: ``"bool"`` (True = attend; for sdpa) or ``"additive"`` (0 where allowed, the
                dtype's lowest finite value elsewhere; for eager attention, which adds the mask:
                never hand it a bool mask).
            dtype: For ``"additive"``: float16, bfloat16, float32 (default) or float64.
            max_bytes: Refuse masks larger than this (default :func:`get_mask_budget`, 4 GiB).

        Returns:
            The mask. Pad rows attend only to themselves, so no row is fully masked.

        Raises:
            ArgumentError: If the mask would exceed ``max_bytes`` (use :meth:`block_mask`), or
                ``kind`` / ``dtype`` is unknown.

        Example:
            >>> tags = r1kit.ParallelTags(1, 2, 3, 4, 5, 6)
            >>> layout = r1kit.parse_parallel(torch.tensor([1, 3, 9, 3, 9, 2]), tags)
            >>> layout.attention_mask("additive")[0, 0, 4, :4]  # path 2 (token 3 on) skips path 1
            tensor([ 0.0000e+00, -3.4028e+38, -3.4028e+38,  0.0000e+00])
        """
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ArgumentTypeError(f"`dtype`: expected a torch.dtype, got {type(dtype).__name__}")
        name = None if dtype is None else str(dtype).removeprefix("torch.")
        budget = _mask_budget if max_bytes is None else max_bytes
        return self._core.attention_mask(kind, name, budget)

    def block_mask(self, block_size: int = 128) -> BlockMask:
        """A FlexAttention ``BlockMask`` for this layout (one head, broadcast over heads).

        The tile tables (empty / partial / full per ``block_size`` tile) are computed in Rust from
        the O(L) parse; the ``mask_mod`` closes over per-token tensors, so nothing L x L is
        built. Equal to ``create_block_mask`` with the same rule.

        Args:
            block_size: Tile size (128 is FlexAttention's default).

        Returns:
            A ``torch.nn.attention.flex_attention.BlockMask`` on the input's device.

        Example:
            >>> tags = r1kit.ParallelTags(1, 2, 3, 4, 5, 6)
            >>> layout = r1kit.parse_parallel(torch.tensor([1, 3, 9, 3, 9, 2]), tags)
            >>> layout.block_mask(block_size=2).to_dense()[0, 0]
            tensor([[1, 0, 0],
                    [1, 1, 0],
                    [1, 1, 1]], dtype=torch.int32)
        """
        from torch.nn.attention.flex_attention import BlockMask

        if isinstance(block_size, bool) or not isinstance(block_size, int):
            raise ArgumentTypeError(
                f"`block_size`: expected an int, got {type(block_size).__name__}"
            )
        kv_num, kv_idx, full_num, full_idx = self._core.block_tables(block_size)
        n = self._core.seq_len
        return BlockMask.from_kv_blocks(
            kv_num,
            kv_idx,
            full_num,
            full_idx,
            BLOCK_SIZE=block_size,
            mask_mod=self.mask_mod(),
            seq_lengths=(n, n),
        )

    def mask_mod(
        self,
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The layout's rule as a FlexAttention ``mask_mod(b, h, q_idx, kv_idx)``.

        It indexes per-token tensors with tuples (``t[b, q]``), which CPU flex needs.
        """
        real, lo, hi = self._core.intervals()
        levels = int(lo.shape[-1])

        def mask_mod(
            b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
        ) -> torch.Tensor:
            real_q = real[b, q_idx]
            ok = (kv_idx <= q_idx) & real_q & real[b, kv_idx]
            for d in range(levels):
                ok = ok & ~((kv_idx >= lo[b, q_idx, d]) & (kv_idx < hi[b, q_idx, d]))
            return ok | (~real_q & (q_idx == kv_idx))

        return mask_mod

    def stats(self) -> list[RowStats]:
        """Per-row statistics: blocks, paths per block, tokens in paths, block starts.

        Example:
            >>> tags = r1kit.ParallelTags(1, 2, 3, 4, 5, 6)
            >>> layout = r1kit.parse_parallel(torch.tensor([9, 9, 1, 3, 9, 3, 9, 2]), tags)
            >>> s = layout.stats()[0]
            >>> s.n_blocks, s.paths_per_block, s.tokens_in_paths, s.block_start_fraction
            (1, [2], 4, [0.25])
        """
        return [_row_stats(cast(dict[str, Any], d)) for d in self._core.stats()]

    def blocks(self, row: int) -> list[dict[str, Any]]:
        """Row ``row``'s blocks as token-index spans.

        Each dict has ``start`` / ``end`` (``<Parallel>`` / ``</Parallel>`` indices, ``end`` None
        when truncated), ``depth``, ``parent``, ``paths`` (``(start, close, end)`` per path:
        ``<Path>``, ``</Path>`` or None, one past its last token), ``summary``
        (``(start, close)`` or None) and ``summary_inside`` (layout B).
        """
        return cast(list[dict[str, Any]], self._core.blocks(row))


def _row_stats(d: dict[str, Any]) -> RowStats:
    return RowStats(
        status=str(d["status"]),
        n_blocks=int(d["n_blocks"]),
        n_top_level_blocks=int(d["n_top_level_blocks"]),
        paths_per_block=list(d["paths_per_block"]),
        block_depth=list(d["block_depth"]),
        tokens_in_paths=int(d["tokens_in_paths"]),
        response_tokens=int(d["response_tokens"]),
        block_start_fraction=list(d["block_start_fraction"]),
    )


def parse_parallel(
    input_ids: torch.Tensor,
    tags: ParallelTags,
    attention_mask: torch.Tensor | None = None,
    response_start: int | torch.Tensor | None = None,
    on_error: OnError = "causal",
    structured: bool = True,
    *,
    path: Literal["auto", "cpu", "device"] | None = None,
) -> ParallelLayout:
    """Parses parallel-thinking blocks in a batch of token ids.

    Args:
        input_ids: Integer ids ``[B, L]`` (or ``[L]``, taken as one row) on any device.
        tags: The tag ids.
        attention_mask: ``[B, L]`` bool or integer, 0 for pads (left or right padding); None:
            no pads.
        response_start: Index of each row's first response token (an int, or a ``[B]`` integer
            tensor); tags before it are ordinary tokens. Default 0.
        on_error: ``"causal"``: a row with a structural error becomes plain causal text from the
            failing block on; ``"raise"``: raise :class:`r1kit.StructureError` naming the row.
        structured: False gives the causal ("Seen") variant: sequential positions and causal
            masks, with the same status and stats.
        path: ``"cpu"`` (raw memory), ``"device"`` (tch ops) or None/``"auto"``.

    Returns:
        The :class:`ParallelLayout`.

    Raises:
        ShapeError, DtypeError, DeviceError, ArgumentError: On bad inputs (naming the argument).
        StructureError: With ``on_error="raise"``, on the first row with a structural error.

    Example:
        >>> tags = r1kit.ParallelTags(1, 2, 3, 4, 5, 6)
        >>> r1kit.parse_parallel(torch.tensor([[1, 3, 9, 4, 2]]), tags).status
        [RowStatus(kind='single_path', at=4)]
    """
    if not isinstance(tags, ParallelTags):
        raise ArgumentTypeError(f"`tags`: expected a ParallelTags, got {type(tags).__name__}")
    if not isinstance(structured, bool):
        raise ArgumentTypeError(f"`structured`: expected a bool, got {type(structured).__name__}")
    core, pos = _core.parse_parallel(
        input_ids, tags.ids(), attention_mask, response_start, on_error, structured, path
    )
    return ParallelLayout(core, pos)
