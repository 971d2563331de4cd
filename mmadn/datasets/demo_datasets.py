"""Registered dataset classes for the synthetic demo shapes data.

The data are generated on first use (see :mod:`mmadn.datasets.demo_shapes`), so a config
only needs to name the dataset and a ``data_root``::

    train_dataloader = dict(dataset=dict(
        type='DemoShapesDataset', data_root='data/demo_shapes',
        ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
        pipeline=...))

    train_dataloader = dict(dataset=dict(
        type='DemoShapesClsDataset', data_root='data/demo_shapes_cls', split='train',
        pipeline=...))

``generator_kwargs`` (optional) is forwarded to the generator when the data are missing.
"""
import os.path as osp
from typing import List, Optional, Union

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS as MMDET_DATASETS
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS

from .demo_shapes import (DEMO_SHAPES_CLASSES, DEMO_SHAPES_PALETTE, ensure_demo_shapes,
                          ensure_demo_shapes_cls)

__all__ = ['DemoShapesDataset', 'DemoShapesClsDataset']


@MMDET_DATASETS.register_module()
class DemoShapesDataset(CocoDataset):
    """COCO-format synthetic shapes (instance segmentation), generated if missing.

    Args:
        generator_kwargs (dict, optional): arguments of
            :func:`~mmadn.datasets.demo_shapes.generate_demo_shapes`, used only when the
            data under ``data_root`` do not exist yet.
        *args, **kwargs: as :class:`mmdet.datasets.CocoDataset`. The root generated is
            ``data_root`` (or, without it, the parent of the annotation file's folder).
    """

    METAINFO = dict(classes=DEMO_SHAPES_CLASSES, palette=DEMO_SHAPES_PALETTE)

    def __init__(self, *args, generator_kwargs: Optional[dict] = None, **kwargs):
        self.generator_kwargs = dict(generator_kwargs or {})
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_root or osp.dirname(osp.dirname(self.ann_file))
        ensure_demo_shapes(root, **self.generator_kwargs)
        return super().load_data_list()


@MMPRETRAIN_DATASETS.register_module()
class DemoShapesClsDataset(CustomDataset):
    """Image-folder synthetic shapes (one shape per image), generated if missing.

    Args:
        data_root (str): dataset root. Defaults to ``'data/demo_shapes_cls'``.
        split (str): ``'train'`` or ``'val'``; the default ``data_prefix``.
        data_prefix (str | dict): overrides ``split`` if given.
        generator_kwargs (dict, optional): arguments of
            :func:`~mmadn.datasets.demo_shapes.generate_demo_shapes_cls`, used only when
            the data do not exist yet.
        **kwargs: as :class:`mmpretrain.datasets.CustomDataset`.
    """

    METAINFO = dict(classes=DEMO_SHAPES_CLASSES, palette=DEMO_SHAPES_PALETTE)

    def __init__(self, data_root: str = 'data/demo_shapes_cls', split: str = 'train',
                 data_prefix: Union[str,
                                    dict] = '', generator_kwargs: Optional[dict] = None, **kwargs):
        if split not in ('train', 'val'):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.split = split
        self.generator_kwargs = dict(generator_kwargs or {})
        super().__init__(data_root=data_root, data_prefix=data_prefix or split, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_root or osp.dirname(self.img_prefix.rstrip('/\\'))
        ensure_demo_shapes_cls(root, **self.generator_kwargs)
        return super().load_data_list()
