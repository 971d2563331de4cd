"""``mmadn::`` config paths, e.g. ``_base_ = 'mmadn::mask_rcnn_r50_adn_fpn_1x_coco.py'``.

mmengine resolves ``pkg::dir/file.py`` only for the packages of its own table
(``mmengine.config.utils.MODULE2PACKAGE``) and only for paths with a folder. Importing
``mmadn`` (which mmadn's tools do first) makes :class:`mmengine.config.Config` resolve
``mmadn::PATH`` too, ``PATH`` being relative to mmadn's ``configs/`` with or without a
folder (``mmadn::imagenet/resnet50_adn_8xb32_in1k.py``). The configs are found under
``mmadn/.mim/configs`` (an installed wheel, or the link of an editable install) or, in a
source tree that was never installed, in ``configs/`` beside the package.

An ``mmadn::`` base is read exactly as the same file given by its own path would be: no
``_scope_`` is added to its dicts (mmadn registers its modules in mmdet's and mmpretrain's
registries, so they build in the config's own ``default_scope``). A ``custom_imports`` line
is not enough on its own: mmengine reads it only after the bases are resolved.
"""
import difflib
import glob
import os.path as osp
from typing import Callable, List, Optional, Tuple

PREFIX = 'mmadn::'
_PATCHED_FLAG = '__mmadn_config_prefix__'


def config_root() -> str:
    """The directory holding mmadn's configs (installed or in the source tree)."""
    pkg_dir = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for root in (osp.join(pkg_dir, '.mim', 'configs'), osp.join(osp.dirname(pkg_dir), 'configs')):
        if osp.isdir(root):
            return root
    raise FileNotFoundError(
        f'mmadn configs not found: neither {osp.join(pkg_dir, ".mim", "configs")} (an '
        f'installed mmadn) nor {osp.join(osp.dirname(pkg_dir), "configs")} (a source tree) '
        'exists; reinstall mmadn (pip install . or pip install -e .)')


def shipped_configs() -> List[str]:
    """Every shipped config, relative to :func:`config_root` (``'demo/...py'``, ...)."""
    root = config_root()
    return sorted(
        osp.relpath(p, root) for p in glob.glob(osp.join(root, '**', '*.py'), recursive=True))


def resolve_config(path: str) -> str:
    """The file of ``'mmadn::REL'`` (or of ``REL``), ``REL`` relative to mmadn's configs."""
    rel = path[len(PREFIX):] if path.startswith(PREFIX) else path
    root = config_root()
    full = osp.normpath(osp.join(root, rel))
    if rel and not osp.isabs(rel) and full.startswith(root + osp.sep) and osp.isfile(full):
        return full
    close = difflib.get_close_matches(rel, shipped_configs(), n=3, cutoff=0.5)
    hint = f'; close matches: {", ".join(PREFIX + c for c in close)}' if close else ''
    raise FileNotFoundError(
        f'{PREFIX}{rel}: no such mmadn config in {root}; expected {PREFIX}<path relative to '
        f'configs/>, e.g. {PREFIX}mask_rcnn_r50_adn_fpn_1x_coco.py or '
        f'{PREFIX}imagenet/resnet50_adn_8xb32_in1k.py{hint}')


def _with_mmadn_prefix(get_cfg_path: Callable) -> Callable:

    def _get_cfg_path(cfg_path: str, filename: str) -> Tuple[str, Optional[str]]:
        if isinstance(cfg_path, str) and cfg_path.startswith(PREFIX):
            return resolve_config(cfg_path), None
        return get_cfg_path(cfg_path, filename)

    setattr(_get_cfg_path, _PATCHED_FLAG, True)
    _get_cfg_path.__wrapped__ = get_cfg_path
    return _get_cfg_path


def enable_config_prefix() -> None:
    """Make ``Config.fromfile`` resolve ``mmadn::`` bases (idempotent)."""
    from mmengine.config import Config
    current = Config.__dict__['_get_cfg_path']
    func = current.__func__ if isinstance(current, staticmethod) else current
    if not getattr(func, _PATCHED_FLAG, False):
        Config._get_cfg_path = staticmethod(_with_mmadn_prefix(func))
