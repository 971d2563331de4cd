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


def check_skip_form(skip: SkipLike, name: str = 'skip') -> Union[str, SkipTuple]:
    """Check a skip value before the model (and so its number of stages) is known.

    Returns ``'super'``, ``'base'`` or the tuple of bools; raises ValueError naming
    ``name``, the value and the accepted form. :func:`parse_skip` checks the length later.
    """
    if skip is None:
        return SUPER
    if isinstance(skip, str):
        word = skip.strip()
        if word.lower() in (SUPER, BASE):
            return word.lower()
        if word and set(word.upper()) <= {'T', 'F'}:
            return tuple(c == 'T' for c in word.upper())
    elif isinstance(skip, (list, tuple)) and skip and all(
            isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)) for v in skip):
        return tuple(bool(v) for v in skip)
    raise ValueError(f'{name}={skip!r} does not parse: expected a string of T/F letters, '
                     "one per stage (e.g. 'TTFF'), a list of bools, or 'super' / 'base'")


def skips_as_tuples(*forms: Union[str, SkipTuple]) -> Tuple[SkipTuple, ...]:
    """Results of :func:`check_skip_form` as tuples of one length: the length of the
    tuples among them (which must agree), or 1 when all are words."""
    lengths = {len(f) for f in forms if isinstance(f, tuple)}
    if len(lengths) > 1:
        raise ValueError(f'skips {[format_skip(f) if isinstance(f, tuple) else f for f in forms]}'
                         ' have different numbers of stages')
    n = lengths.pop() if lengths else 1
    return tuple(f if isinstance(f, tuple) else (f == BASE, ) * n for f in forms)


def check_skips_form(skips, name: str = 'skips') -> Union[str, list]:
    """Check a list of sub-networks before the model is known: ``'all'``, a comma-separated
    string (``'FFFF,TTFF,TTTT'``, ``'super,base'``) or a sequence of skip values.

    Returns ``'all'`` or the list of :func:`check_skip_form` results; raises ValueError
    naming ``name`` and the accepted form, also for an empty list.
    """
    accepted = ("expected 'all', a comma-separated list such as 'FFFF,TTFF,TTTT' or "
                "'super,base', or a list of skip values")
    if isinstance(skips, str):
        if skips.strip().lower() == 'all':
            return 'all'
        items = [s.strip() for s in skips.split(',')]
        if not any(items):
            raise ValueError(f'{name}={skips!r} names no sub-network: {accepted}')
        if not all(items):
            raise ValueError(f'{name}={skips!r} has an empty entry: {accepted}')
    elif isinstance(skips, (list, tuple)):
        items = list(skips)
        # a flat list of bools is one skip value, not a list of them
        if items and all(isinstance(v, (bool, int)) for v in items):
            items = [items]
        if not items:
            raise ValueError(f'{name}={skips!r} names no sub-network: {accepted}')
    else:
        raise ValueError(f'{name}={skips!r} (type {type(skips).__name__}): {accepted}')
    forms = []
    for item in items:
        try:
            forms.append(check_skip_form(item, 'skip'))
        except ValueError as err:
            raise ValueError(f'{name}={skips!r}: {err}') from None
    return forms


def resolve_skips(skips, num_stages: int) -> list:
    """``'all'``, ``'FFFF,TTFF'``, or a list of skip values -> list of skip tuples."""
    forms = check_skips_form(skips)
    if forms == 'all':
        return list(enumerate_skips(num_stages))
    if isinstance(skips, str):
        return [parse_skip(s.strip(), num_stages) for s in skips.split(',')]
    items = list(skips)
    if items and all(isinstance(v, (bool, int)) for v in items):
        items = [items]
    return [parse_skip(s.strip() if isinstance(s, str) else s, num_stages) for s in items]


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


def resolve_num_shared_blocks(num_shared, stage_blocks: Sequence[int],
                              arch: str) -> Tuple[int, ...]:
    """The shared blocks per stage: ``num_shared`` checked against ``stage_blocks`` (the
    blocks of each stage), or the authors' split for None.

    Raises:
        ValueError: naming the value, the architecture ``arch`` (e.g. ``'depth 50'``) and
            the accepted form; every stage needs a shared and a skippable block.
    """
    stage_blocks = tuple(stage_blocks)
    if any(n < 2 for n in stage_blocks):
        raise ValueError(f'{arch}: blocks per stage {stage_blocks}; every stage needs at '
                         'least 2 blocks (one shared, one skippable)')
    if num_shared is None:
        return tuple(default_num_shared_blocks(n) for n in stage_blocks)
    ok = isinstance(num_shared, (list, tuple)) and len(num_shared) == len(stage_blocks) \
        and all(isinstance(k, int) and 1 <= k <= n - 1 for k, n in zip(num_shared, stage_blocks))
    if not ok:
        ranges = ', '.join(f'1..{n - 1}' for n in stage_blocks)
        raise ValueError(
            f'num_shared_blocks={num_shared!r}: expected {len(stage_blocks)} integers, one '
            f'per stage, within ({ranges}) for {arch} (blocks per stage {stage_blocks}); '
            'every stage keeps at least one shared and one skippable block')
    return tuple(num_shared)


#: metadata of a dynamic-depth ONNX file (inputs ``input`` and ``skip``, one bool per
#: skippable stage): written by mmadn.deploy, read by mmadn.runtime
ONNX_META_STAGES = 'mmadn.num_skippable_stages'
ONNX_META_SCOPE = 'mmadn.scope'
ONNX_META_GFLOPS = 'mmadn.gflops'
