"""Files that are never lost: atomic writes (a file is written under a temporary name in
its own directory, flushed to disk and renamed into place, so that a reader, or a run after
a crash, sees the old file or the new one, never a part of one) and an exclusive lock on a
work directory."""
import errno
import fcntl
import json
import os
import os.path as osp
import socket
import sys
import time
from typing import Dict, List, Optional

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


def write_bytes_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; a failed write leaves no temporary file."""
    tmp = temporary_path(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        replace_atomically(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomically(path: str, text: str) -> None:
    write_bytes_atomically(path, text.encode())


def read_json(path: str, what: str):
    """The content of the JSON file ``path``; a file that is not JSON raises ValueError
    naming it, where the parser stopped and what the file should hold (``what``)."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        state = 'empty' if not text.strip() else \
            f'not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})'
        raise ValueError(f'{path} is {state}: expected {what}') from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(folder: str) -> List[str]:
    """Remove the temporary files that killed atomic writes left in ``folder``: those of
    processes that are gone (the process id ends the name), never one that a running
    process is writing."""
    removed = []
    if osp.isdir(folder):
        for name in os.listdir(folder):
            if not name.startswith(TMP_PREFIX):
                continue
            pid = name.rpartition('.')[2]
            if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
                continue
            try:
                os.remove(osp.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed


class DirectoryInUseError(RuntimeError):
    """Another process holds the lock of a directory."""


class DirectoryLock:
    """An exclusive lock on ``folder`` (``flock`` on ``folder/.mmadn.lock``), held until
    :meth:`release` or the end of the process: the kernel releases it when the process
    ends, however it ends, so a lock is never stale. The lock file names its holder (process
    id, host, start time, command line) for the message another process gets. Taking a
    lock this process already holds does nothing."""

    FILENAME = '.mmadn.lock'
    _held: Dict[str, 'DirectoryLock'] = {}

    def __init__(self, folder: str):
        self.folder = osp.abspath(folder)
        self.path = osp.join(self.folder, self.FILENAME)
        self._fd: Optional[int] = None

    def acquire(self, what: str = 'training run') -> 'DirectoryLock':
        """Take the lock or raise :class:`DirectoryInUseError` naming its holder."""
        if self.path in self._held:
            return self._held[self.path]
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise DirectoryInUseError(
                f'{self.folder} is in use by another {what} ({self.holder()}); wait until it '
                'has finished, or use another work dir') from None
        holder = dict(pid=os.getpid(), host=socket.gethostname(),
                      started=time.strftime('%Y-%m-%d %H:%M:%S'), command=' '.join(sys.argv))
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        self._held[self.path] = self
        return self

    def holder(self) -> str:
        try:
            with open(self.path) as f:
                info = json.load(f)
            return (f"process {info['pid']} on {info['host']}, started {info['started']}: "
                    f"{info['command']}")
        except (OSError, ValueError, KeyError):
            return 'its process could not be named'

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
            self._held.pop(self.path, None)
