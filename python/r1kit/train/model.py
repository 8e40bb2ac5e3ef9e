"""The demo's tokenizer and model, built in code, and tag tokens for any tokenizer.

:func:`build_tokenizer` makes a character-level ``tokenizers`` tokenizer (printable ASCII and
newline, one token each) whose special tokens are the six Parallel-R1 tags, the search-recipe tags
(``<answer>``, ``<search>``, ``<information>``, ``<think>`` and their closers) and
``Final Answer:``, wrapped as a ``transformers.PreTrainedTokenizerFast``. :func:`tiny_model` is a
randomly initialised Qwen2 sized for a laptop CPU. :func:`add_tag_tokens` adds the tags to a real
tokenizer that lacks them and gives each new embedding row its own value.

Example:
    >>> tok = build_tokenizer()
    >>> ids = tok.encode("<Parallel><Path>1+2=3</Path>", add_special_tokens=False)
    >>> len(ids), tok.decode(ids)
    (8, '<Parallel><Path>1+2=3</Path>')
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from r1kit.errors import ArgumentError, ArgumentTypeError
from r1kit.structure import DEFAULT_TAG_SPELLING

__all__ = [
    "ANSWER_TAGS",
    "FINAL_ANSWER",
    "PARALLEL_TAGS",
    "add_tag_tokens",
    "build_tokenizer",
    "tiny_model",
]

PARALLEL_TAGS: tuple[str, ...] = DEFAULT_TAG_SPELLING
"""``<Parallel> </Parallel> <Path> </Path> <Summary> </Summary>``."""
ANSWER_TAGS: tuple[str, ...] = (
    "<answer>",
    "</answer>",
    "<search>",
    "</search>",
    "<information>",
    "</information>",
    "<think>",
    "</think>",
)
"""The tags of the search recipe (Search-R1 / ZeroSearch layout)."""
FINAL_ANSWER = "Final Answer:"
"""One token, so the math answer line costs the model a single choice."""

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def build_tokenizer() -> Any:
    """A character-level tokenizer with the tags as special tokens (no download).

    Ids: ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, then the six Parallel-R1 tags, the answer/search
    tags, ``Final Answer:`` and the characters. Decoding joins tokens without spaces, so
    ``decode(encode(text)) == text`` for ASCII text.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` (pad ``<pad>``, eos ``<eos>``).

    Example:
        >>> tok = build_tokenizer()
        >>> tok.pad_token_id, tok.eos_token_id, tok.convert_ids_to_tokens(3)
        (0, 1, '<Parallel>')
    """
    import transformers

    tk: Any = importlib.import_module("tokenizers")

    specials = [PAD, EOS, UNK, *PARALLEL_TAGS, *ANSWER_TAGS, FINAL_ANSWER]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex("."), behavior="isolated")
    tok.decoder = tk.decoders.Fuse()
    tok.add_special_tokens(specials)
    return transformers.PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK
    )


def tiny_model(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> Any:
    """A randomly initialised ``Qwen2ForCausalLM`` (float32, CPU).

    Args:
        vocab_size: Rows of the embedding (``len(tokenizer)``).
        hidden_size: Model width (a multiple of ``num_heads``).
        num_layers: Decoder layers.
        num_heads: Attention heads (two key/value heads when the head count is even).
        seed: Seed of the initialisation.
        attn_implementation: ``"sdpa"`` or ``"eager"``.

    Returns:
        The model.

    Raises:
        ArgumentError: If a size is not positive or ``hidden_size`` is not a multiple of
            ``num_heads``.

    Example:
        >>> m = tiny_model(128, hidden_size=32, num_layers=1, num_heads=2)
        >>> m.config.vocab_size, sum(p.numel() for p in m.parameters()) > 0
        (128, True)
    """
    import transformers

    for name, value in (
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(f"`{name}`: expected an int, got {type(value).__name__}")
        if value < 1:
            raise ArgumentError(f"`{name}`: expected a positive size, got {value}")
    if hidden_size % num_heads:
        raise ArgumentError(
            f"`hidden_size`: expected a multiple of num_heads={num_heads}, got {hidden_size}"
        )
    cfg = transformers.Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=2 if num_heads % 2 == 0 else num_heads,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.Qwen2ForCausalLM._from_config(  # type: ignore[no-untyped-call]
            cfg, attn_implementation=attn_implementation
        )


def add_tag_tokens(
    tokenizer: Any,
    model: Any,
    tags: tuple[str, ...] = PARALLEL_TAGS,
    noise_std: float = 0.02,
    seed: int = 0,
) -> list[str]:
    """Adds the tags a tokenizer lacks as special tokens and grows the model's embeddings.

    Each new input-embedding row (and output row, when untied) is the mean of the existing rows
    plus Gaussian noise of ``noise_std`` times their mean per-dimension std, so new tags start
    near the average token yet never identical to each other.

    Args:
        tokenizer: A ``transformers`` tokenizer (changed in place).
        model: A ``transformers`` causal LM (changed in place).
        tags: The tag strings that must be single tokens.
        noise_std: Relative size of the noise.
        seed: Seed of the noise.

    Returns:
        The tags that were added (empty when the tokenizer had them all).

    Raises:
        ArgumentError: If ``noise_std`` is not positive.

    Example:
        >>> tok, m = build_tokenizer(), tiny_model(200, hidden_size=16, num_layers=1, num_heads=2)
        >>> add_tag_tokens(tok, m, ("<Parallel>", "<Verify>"))
        ['<Verify>']
    """
    if not noise_std > 0:
        raise ArgumentError(f"`noise_std`: expected a positive number, got {noise_std}")
    vocab = tokenizer.get_vocab()
    missing = [t for t in tags if t not in vocab]
    if not missing:
        return []
    old = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": missing})
    new = len(tokenizer)
    rows = max(new, model.get_input_embeddings().weight.shape[0])
    model.resize_token_embeddings(rows, mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        matrices = [model.get_input_embeddings().weight]
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != matrices[0].data_ptr():
            matrices.append(out.weight)
        for w in matrices:
            base = w[:old].float()
            mean, std = base.mean(0), base.std(0).mean()
            noise = torch.randn(new - old, w.shape[1], generator=gen) * std * noise_std
            w[old:new] = (mean + noise).to(w.dtype)
    return missing
