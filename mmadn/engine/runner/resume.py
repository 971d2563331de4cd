"""Finding the checkpoint a run continues from (``tools/train.py --resume``)."""
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

from ...models.checkpoint import CHECKPOINT_ERRORS, load_checkpoint_file
from ...models.layers import CheckpointMismatchError

#: The names CheckpointHook gives periodic checkpoints (its default ``filename_tmpl``).
CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def list_checkpoints(folders: Sequence[str]) -> List[str]:
    """``iter_*.pth`` / ``epoch_*.pth`` of ``folders``, newest (highest step) first."""
    found = {}
    for folder in folders:
        if not folder or not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            m = CHECKPOINT_NAME.match(name)
            path = osp.join(folder, name)
            if m and osp.isfile(path):
                found[osp.abspath(path)] = (int(m.group(2)), osp.getmtime(path))
    return sorted(found, key=lambda p: found[p], reverse=True)


def find_resume_checkpoint(
        folders: Sequence[str]) -> Tuple[Optional[str], List[str], Dict[str, str]]:
    """The newest checkpoint of ``folders`` that loads as a training checkpoint.

    ``last_checkpoint`` (mmengine's pointer) is only a hint: a missing pointer, or one to a
    file that is gone or broken, does not hide older good checkpoints.

    Returns:
        ``(path or None, every candidate found (newest first), {candidate: why it was
        passed over})``.
    """
    candidates = list_checkpoints(folders)
    for folder in folders:
        pointer = osp.join(folder or '', 'last_checkpoint')
        if osp.isfile(pointer):
            with open(pointer) as f:
                target = f.read().strip()
            if target and osp.isfile(target) and osp.abspath(target) not in candidates:
                candidates.insert(0, osp.abspath(target))
    refused = {}
    for path in candidates:
        try:
            load_checkpoint_file(path, training=True)
        except (*CHECKPOINT_ERRORS, CheckpointMismatchError, OSError) as err:
            refused[path] = str(err).splitlines()[0]
            continue
        return path, candidates, refused
    return None, candidates, refused
