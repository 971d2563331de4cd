"""Load mmengine checkpoints under ``torch.load(weights_only=True)`` (the default since
torch 2.6) without turning that safety off: the few types Runner checkpoints hold are
allow-listed, and mmengine's checkpoint loaders are re-registered (through the public
``CheckpointLoader.register_scheme``) so that a refused or corrupt file raises
:class:`UnsafeCheckpointError` / :class:`CorruptCheckpointError` naming the file and what
to do. ``docs/checkpoint_safety.md`` explains every allow-listed type and each decision.
"""
import functools
import inspect
import os
import pickle
import re
import zipfile
from typing import Callable, List, Optional, Tuple

import torch

__all__ = [
    'UnsafeCheckpointError', 'CorruptCheckpointError', 'allow_mmengine_checkpoints', 'describe_file'
]

# Prefix of every error torch.load raises for a weights_only refusal.
_WEIGHTS_ONLY_PREFIX = 'Weights only load failed'
# Patterns of the reasons torch's weights_only unpickler gives.
_UNSUPPORTED_GLOBAL = re.compile(r'Unsupported global: GLOBAL (\S+) was not an allowed global')
_BLOCKED_GLOBAL = re.compile(r'unsupported GLOBAL (\S+) whose module (\S+) is blocked')
_GETATTR_REFUSED = 'builtins.getattr('

# The statistics methods HistoryBuffer registers by default (in
# ``HistoryBuffer._set_default_statistics``, which only runs when a buffer is
# created, so the class registry may still be empty at load time).
_HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})

# Globals that run code by themselves when a pickle calls them: never suggested for the
# allow-list (torch blocks os/sys/posix/nt outright; these it would let a user allow).
_CODE_RUNNING_MODULES = frozenset({
    'subprocess', 'shutil', 'importlib', 'runpy', 'pickle', '_pickle', 'marshal', 'code', 'codeop',
    'ctypes', 'pty', 'socket', 'multiprocessing', 'webbrowser', 'pdb', 'timeit', 'operator',
    'functools', 'types', 'io', 'pathlib', 'tempfile', 'glob', 'asyncio'
})
# builtins that only build plain values: everything else in builtins (eval, exec,
# getattr, __import__, open, ...) can run code or reach it
_VALUE_BUILTINS = frozenset({
    'set', 'frozenset', 'slice', 'complex', 'bytearray', 'range', 'bytes', 'int', 'float', 'bool',
    'str', 'tuple', 'list', 'dict'
})

_done = False


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint was refused by ``torch.load(weights_only=True)``.

    Subclasses :class:`pickle.UnpicklingError`, which ``torch.load`` raises
    for the same refusal, so code that handled that error keeps working.

    Attributes:
        filename (str): The checkpoint that was refused.
        refused_globals (list[str]): The refused globals, as
            ``module.qualname``; empty if torch refused the file for another
            reason (e.g. an object of a type that is not allow-listed).
    """

    def __init__(self, message: str, filename: str, refused_globals: List[str]):
        super().__init__(message)
        self.filename = filename
        self.refused_globals = refused_globals

    def __reduce__(self):  # picklable, e.g. across worker processes
        return type(self), (str(self), self.filename, self.refused_globals)


class CorruptCheckpointError(RuntimeError):
    """A file given as a checkpoint is no readable ``torch.save`` file.

    Raised by mmengine's checkpoint loaders (wrapped by
    :func:`allow_mmengine_checkpoints`) for an empty, text, truncated or foreign
    file, with the message ``corrupt or not a checkpoint: <file> (<what it is>)``.

    Attributes:
        filename (str): The file.
        what (str): What the file looks like (e.g. ``'an empty file'``).
    """

    def __init__(self, message: str, filename: str = '', what: str = ''):
        super().__init__(message)
        self.filename = filename
        self.what = what

    def __reduce__(self):
        return type(self), (str(self), self.filename, self.what)


def describe_file(filename: str) -> str:
    """What a file that does not load as a checkpoint looks like, in a few words."""
    path = os.path.expanduser(filename)
    try:
        size = os.path.getsize(path)
        with open(path, 'rb') as f:
            head = f.read(256)
    except OSError as err:
        return f'unreadable: {err.strerror or err}'
    if size == 0:
        return 'an empty file (0 bytes)'
    if head.startswith(b'PK'):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return (f'a truncated or damaged zip archive ({size} bytes; a file cut short '
                    'while it was written looks like this)')
        if not any(n.endswith('data.pkl') for n in names):
            return f'a zip archive of {len(names)} files that torch.save did not write'
        return f'a damaged torch.save archive ({size} bytes)'
    if head.startswith(b'\x80'):
        return f'a pickle that is cut short or damaged ({size} bytes)'
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in '\r\n\t' for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ''
        return f'a text file ({size} bytes, starting {first!r})'
    return f'a binary file of {size} bytes that torch.save did not write'


def _reason(message: str) -> str:
    """torch's reason for a weights_only refusal, without its advice (which includes
    loading with ``weights_only=False``: never right for a file that was refused)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    reason = [ln for ln in lines if ln.startswith('WeightsUnpickler error:')]
    if reason:
        return reason[0][:200]
    return 'refused by weights_only' if lines and _WEIGHTS_ONLY_PREFIX in lines[0] else \
        (lines or ['?'])[0][:200]


def _pickle_globals(filename: str) -> List[str]:
    """``module.name`` of every global the pickles of a local file name (a raw or legacy
    pickle, or the ``data.pkl`` of a torch.save zip), read statically with
    :mod:`pickletools` (nothing is executed); [] if it cannot be read."""
    import pickletools
    path = os.path.expanduser(filename)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = b''.join(
                    archive.read(name) for name in archive.namelist() if name.endswith('data.pkl'))
        else:
            with open(path, 'rb') as f:
                data = f.read()
    except (OSError, zipfile.BadZipFile):
        return []
    found, strings, pos = [], [], 0
    while pos < len(data):  # a legacy torch.save file holds several pickles in a row
        try:
            for op, arg, at in pickletools.genops(data[pos:]):
                if op.name == 'GLOBAL':
                    found.append(str(arg).replace(' ', '.'))
                elif op.name == 'STACK_GLOBAL' and len(strings) >= 2:
                    found.append(f'{strings[-2]}.{strings[-1]}')
                elif isinstance(arg, str):
                    strings.append(arg)
                end = at
        except Exception:  # noqa: BLE001 - the end of the pickles, or not a pickle
            break
        pos += end + 1
    return sorted({_py3_name(name) for name in found})


def _py3_name(name: str) -> str:
    """``name`` with the Python 2 module names that pickle protocol 2 (torch.save's)
    writes made Python 3's: ``__builtin__.getattr`` -> ``builtins.getattr``."""
    module, dot, rest = name.partition('.')
    return {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}.get(module, module) + dot + rest


def _corrupt_error(filename, err: BaseException) -> CorruptCheckpointError:
    what = describe_file(filename) if isinstance(filename, str) else 'not a file'
    detail = _reason(str(err) or type(err).__name__)
    return CorruptCheckpointError(
        f'corrupt or not a checkpoint: {filename} ({what}; torch.load: '
        f'{type(err).__name__}: {detail}). Use a file written by torch.save, e.g. '
        'iter_*.pth / epoch_*.pth of a training work dir.', filename, what)


def _readable_torch_file(filename) -> bool:
    """False for a local file that is no complete torch.save file (a zip archive with a
    pickle inside, or a legacy pickle): its unpickling errors are not refusals."""
    if not isinstance(filename, str) or not os.path.isfile(os.path.expanduser(filename)):
        return True  # not local: trust the loader's reason
    path = os.path.expanduser(filename)
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
    except OSError:  # unreadable (permissions ...): the loader's error says it
        return True
    if head.startswith(b'\x80'):
        return True
    if not head.startswith(b'PK'):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith('data.pkl') for n in zf.namelist())
    except zipfile.BadZipFile:
        return False


def _is_corrupt_file_error(err: BaseException) -> bool:
    """Whether torch.load failed because the file is no (complete) torch.save file."""
    if isinstance(err, (EOFError, zipfile.BadZipFile)):
        return True
    if isinstance(err, pickle.UnpicklingError):
        return _WEIGHTS_ONLY_PREFIX not in str(err)
    if isinstance(err, RuntimeError):
        message = str(err)
        return any(s in message
                   for s in ('PytorchStreamReader', 'zip archive', 'invalid header', 'magic number',
                             'unexpected EOF', 'failed finding central directory'))
    if isinstance(err, (ValueError, UnicodeDecodeError)):
        return 'pickle' in str(err).lower() or isinstance(err, UnicodeDecodeError)
    return False


def _history_buffer_getattr(obj, name):
    """``builtins.getattr`` for the weights_only unpickler: only a statistics method of
    ``HistoryBuffer`` (as its pickles reference them), unless the user allow-listed the
    real ``getattr``; see docs/checkpoint_safety.md."""
    from mmengine.logging import HistoryBuffer
    if getattr in torch.serialization.get_safe_globals():
        # The user trusts a file and allow-listed the real getattr; torch
        # may pick either for 'builtins.getattr', so honour theirs.
        return getattr(obj, name)
    if (obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_')):
        method = vars(HistoryBuffer).get(name)
        if inspect.isfunction(method) and (name in _HISTORY_BUFFER_STATISTICS or
                                           HistoryBuffer._statistics_methods.get(name) is method):
            return method
    raise pickle.UnpicklingError(
        f'builtins.getattr({obj!r}, {name!r}) was refused: mmadn only allows '
        'getattr on mmengine.logging.HistoryBuffer for its statistics methods '
        '(min, max, current, mean), because a general getattr would let a '
        'checkpoint reach code to run.')


def _numpy_safe_globals() -> List[Tuple[Callable, str]]:
    """Numpy globals that mmengine checkpoints hold, under all their names."""
    import numpy as np

    # numpy 2 renamed numpy.core to numpy._core: pickles name the writer's, so both
    np_core = getattr(np, '_core', None)
    if np_core is None or not hasattr(np_core, 'multiarray'):
        np_core = np.core  # numpy < 2
    multiarray = np_core.multiarray
    entries = [(fn, f'{module}.{fn.__name__}')
               for module in ('numpy._core.multiarray', 'numpy.core.multiarray')
               for fn in (multiarray._reconstruct, multiarray.scalar)]
    return entries + [(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')]


def _numpy_dtype_classes() -> List[type]:
    """Types of the numpy dtypes allowed in arrays and scalars (the unpickler restores
    state only into instances of allow-listed types)."""
    import numpy as np
    return [type(np.dtype(code)) for code in ('?', 'i4', 'i8', 'f4', 'f8')]


def _safe_globals() -> list:
    from mmengine.logging import HistoryBuffer
    return [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        *_numpy_safe_globals(),
        *_numpy_dtype_classes(),
    ]


def _refused_globals(filename, message: str) -> List[str]:
    """The globals of ``filename`` that weights_only refuses: all of a local torch.save
    zip, listed statically (nothing runs), else the one torch's ``message`` names."""
    found: List[str] = []
    get_unsafe = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)
    if get_unsafe is not None and isinstance(filename, str) \
            and os.path.isfile(os.path.expanduser(filename)):
        try:
            found = sorted(get_unsafe(os.path.expanduser(filename)))
        except Exception:  # noqa: BLE001 - legacy format, unreadable, ...
            found = []
    if not found and isinstance(filename, str) and os.path.isfile(os.path.expanduser(filename)):
        # a torch without get_unsafe_globals_in_checkpoint (2.1): read the pickle statically
        found = [g for g in _pickle_globals(filename) if _blocked_module(g) or _runs_code(g)]
    if not found:
        for pattern in (_UNSUPPORTED_GLOBAL, _BLOCKED_GLOBAL):
            match = pattern.search(message)
            if match:
                name = match.group(1)
                # torch strips "builtins." from the names it reports.
                found = [name if '.' in name else f'builtins.{name}']
                break
    if _GETATTR_REFUSED in message and 'builtins.getattr' not in found:
        found.append('builtins.getattr')
    return found


def _blocked_module(name: str) -> Optional[str]:
    """The module of ``name`` if torch never allows it (``os``, ``sys``)."""
    blocked = getattr(torch._weights_only_unpickler, '_blocklisted_modules',
                      ('sys', 'os', 'posix', 'nt'))
    module = name.split('.')[0]
    return module if module in blocked else None


def _runs_code(name: str) -> bool:
    """Whether the global ``name`` (``module.qualname``) can run code when called."""
    module, _, attr = name.rpartition('.')
    root = module.split('.')[0]
    if root in ('builtins', '__builtin__'):
        # exception classes (CamelCase) only build values; lower-case names are functions
        return attr not in _VALUE_BUILTINS and not attr[:1].isupper()
    return root in _CODE_RUNNING_MODULES


def _refusal_message(filename, refused: List[str], detail: str) -> str:
    """The message of :class:`UnsafeCheckpointError`; ``refused`` may be empty,
    ``detail`` is the message of torch's ``UnpicklingError``."""
    if not refused:
        allow = ('allow-list the type it names with torch.serialization.add_safe_globals([...]) '
                 'before loading it' if hasattr(torch.serialization, 'add_safe_globals') else
                 f'load it with torch >= 2.4 (this is {torch.__version__}) after allow-listing '
                 'the type it names with torch.serialization.add_safe_globals([...])')
        return (f'Refused to load checkpoint {filename!r}: '
                'torch.load(weights_only=True) does not accept its content, '
                'since loading arbitrary pickled objects could run code. '
                f'torch said: {_reason(detail)}. If you trust this file, {allow}.')
    names = ', '.join(refused)
    lines = [
        f'Refused to load checkpoint {filename!r}: it references '
        f'{names}, which torch.load(weights_only=True) refused: loading it '
        'could run code (a pickle can call any global it names), so the file '
        'was not loaded and none of its code ran.'
    ]
    # Say what a refused getattr was asked for (our message, inside torch's).
    lines += [
        line.strip() for line in detail.splitlines() if line.strip().startswith(_GETATTR_REFUSED)
    ]
    blocked = sorted({m for m in map(_blocked_module, refused) if m})
    if blocked:
        lines.append(f'torch never allows globals of module(s) {", ".join(blocked)} '
                     'in weights_only loads: a checkpoint referencing them is almost '
                     'certainly malicious; do not load it, load weights from a trusted '
                     'source.')
    dangerous = [name for name in refused if not _blocked_module(name) and _runs_code(name)]
    if dangerous:
        lines.append(f'{", ".join(dangerous)} can run code by itself and no checkpoint of '
                     'weights needs it: do not allow-list it. This file is not a plain '
                     'checkpoint and may be malicious; load weights from a trusted source.')
    allowable = [name for name in refused if not _blocked_module(name) and not _runs_code(name)]
    if allowable:
        imports = '\n'.join(f'    from {name.rsplit(".", 1)[0]} import {name.rsplit(".", 1)[1]}'
                            for name in allowable)
        listed = ', '.join(name.rsplit('.', 1)[1] for name in allowable)
        lines.append('If you trust the source of this file, allow-list '
                     f'{"it" if len(allowable) == 1 else "them"} before loading:\n'
                     f'    import torch\n{imports}\n'
                     f'    torch.serialization.add_safe_globals([{listed}])\n'
                     '(or load it inside '
                     f'`with torch.serialization.safe_globals([{listed}]):`).')
    return '\n'.join(lines)


def _check_weights_only(loader: Callable) -> Callable:
    """Wrap a CheckpointLoader scheme loader to explain refusals."""

    @functools.wraps(loader)  # keeps __name__, which mmengine logs
    def wrapper(filename, *args, **kwargs):
        try:
            return loader(filename, *args, **kwargs)
        except (UnsafeCheckpointError, CorruptCheckpointError, FileNotFoundError):
            raise
        except pickle.UnpicklingError as err:
            message = str(err)
            refused = _refused_globals(filename, message) \
                if _WEIGHTS_ONLY_PREFIX in message else []
            # a pickle naming a global that runs code is refused, whatever its format
            dangerous = any(_blocked_module(g) or _runs_code(g) for g in refused)
            if not dangerous and (_WEIGHTS_ONLY_PREFIX not in message
                                  or not _readable_torch_file(filename)):
                raise _corrupt_error(filename, err) from err
            raise UnsafeCheckpointError(_refusal_message(filename, refused, message), filename,
                                        refused) from err
        except Exception as err:  # noqa: BLE001 - re-raised unless the file is corrupt
            if _is_corrupt_file_error(err) or not _readable_torch_file(filename):
                raise _corrupt_error(filename, err) from err
            raise

    return wrapper


def _mmengine_loaders() -> list:
    """``(prefixes, loader)`` of the schemes mmengine registers in CheckpointLoader."""
    from mmengine.runner import checkpoint as ckpt
    return [('', ckpt.load_from_local), (('http://', 'https://'), ckpt.load_from_http),
            ('pavi://', ckpt.load_from_pavi),
            ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), ckpt.load_from_ceph),
            (('modelzoo://', 'torchvision://'), ckpt.load_from_torchvision),
            (('open-mmlab://', 'openmmlab://'), ckpt.load_from_openmmlab),
            ('mmcls://', ckpt.load_from_mmcls)]


def _wrap_checkpoint_loaders() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefixes, loader in _mmengine_loaders():
        CheckpointLoader.register_scheme(prefixes, _check_weights_only(loader), force=True)


def allow_mmengine_checkpoints() -> None:
    """Make mmengine checkpoints loadable with ``weights_only=True``.

    Allow-lists the few types that mmengine checkpoints hold (see the module
    docstring) and makes mmengine's checkpoint loaders report a refused
    checkpoint with :class:`UnsafeCheckpointError`. Idempotent and cheap:
    calling it again does nothing.
    """
    global _done
    if _done:
        return
    # torch < 2.4 has no allow-list (and loads with weights_only=False).
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(_safe_globals())
    _wrap_checkpoint_loaders()
    _done = True
