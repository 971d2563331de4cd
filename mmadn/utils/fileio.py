"""Atomic file writes: a file is written under a temporary name in its own directory,
flushed to disk and renamed into place, so that a reader (or a run after a crash) sees the
old file or the new one, never a part of one."""
import os
import os.path as osp
from typing import List

#: Temporary files of an atomic write start with this.
TMP_PREFIX = '.tmp-'


def temporary_path(path: str) -> str:
    """A sibling of ``path`` to write first: same directory (so that the rename is atomic),
    a name starting with :data:`TMP_PREFIX` and ending with this process's id."""
    folder, name = osp.split(path)
    return osp.join(folder, f'{TMP_PREFIX}{name}.{os.getpid()}')


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomically(tmp: str, path: str) -> None:
    """Flush ``tmp`` to disk and rename it to ``path`` (replacing it), then flush the
    directory entry, so that after a crash ``path`` is either the old or the new file."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(osp.dirname(path))


def write_text_atomically(path: str, text: str) -> None:
    tmp = temporary_path(path)
    with open(tmp, 'w') as f:
        f.write(text)
    replace_atomically(tmp, path)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Remove the temporary files that a killed atomic write left in ``folder``."""
    removed = []
    if osp.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(TMP_PREFIX):
                try:
                    os.remove(osp.join(folder, name))
                    removed.append(name)
                except OSError:
                    pass
    return removed
