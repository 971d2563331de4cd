"""Skip configurations: which stages skip their specialized (skippable) sub-path.

A skip configuration holds one boolean per skippable stage; ``True`` skips that stage's
skippable blocks. It is written as a string of ``T``/``F`` letters (``'TTFF'``: stages 1-2
skip, stages 3-4 run every block), as a list/tuple of bools, or as the words ``'super'``
(nothing skipped, the largest sub-network) and ``'base'`` (everything skippable skipped).
"""
import itertools
from typing import Iterator, Sequence, Tuple, Union

SkipLike = Union[str, Sequence[bool], None]
SkipTuple = Tuple[bool, ...]

SUPER = 'super'
BASE = 'base'


def _accepted_form(num_stages: int) -> str:
    return (f"expected {num_stages} letters of T/F (one per stage, e.g. "
            f"'{'T' * (num_stages // 2)}{'F' * (num_stages - num_stages // 2)}'), "
            f"a list of {num_stages} bools, or 'super' / 'base'")


def parse_skip(skip: SkipLike, num_stages: int) -> SkipTuple:
    """Normalize ``skip`` into a tuple of ``num_stages`` bools.

    Args:
        skip: ``'TTFF'``-style string (case-insensitive), a sequence of bools (0/1 allowed),
            ``'super'``, ``'base'`` or ``None`` (same as ``'super'``).
        num_stages: number of skippable stages of the model.

    Raises:
        ValueError: naming the bad value and the accepted form.
    """
    if skip is None:
        return (False, ) * num_stages
    if isinstance(skip, str):
        word = skip.strip().lower()
        if word == SUPER:
            return (False, ) * num_stages
        if word == BASE:
            return (True, ) * num_stages
        letters = word.upper()
        if len(letters) == num_stages and set(letters) <= {'T', 'F'}:
            return tuple(c == 'T' for c in letters)
        raise ValueError(f'skip={skip!r}: {_accepted_form(num_stages)}')
    if isinstance(skip, (list, tuple)):
        ok = len(skip) == num_stages and all(
            isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)) for v in skip)
        if ok:
            return tuple(bool(v) for v in skip)
        raise ValueError(f'skip={skip!r}: {_accepted_form(num_stages)}')
    raise ValueError(f'skip={skip!r} (type {type(skip).__name__}): '
                     f'{_accepted_form(num_stages)}')


def format_skip(skip: Sequence[bool]) -> str:
    """``(True, True, False, False)`` -> ``'TTFF'``."""
    return ''.join('T' if s else 'F' for s in skip)


def enumerate_skips(num_stages: int) -> Iterator[SkipTuple]:
    """All ``2 ** num_stages`` skip configurations, from the super-net (all ``False``) to
    the base-net (all ``True``), in the order of their ``'FF..'``..``'TT..'`` strings."""
    return itertools.product((False, True), repeat=num_stages)


def default_num_shared_blocks(num_blocks: int) -> int:
    """The authors' split of a stage of ``num_blocks`` residual blocks: the first
    ``min(num_blocks - 1, (num_blocks + 1) // 2)`` blocks are shared (never skipped)."""
    return min(num_blocks - 1, (num_blocks + 1) // 2)
