"""Datasets. Importing this package registers :class:`DemoShapesDataset` (in
``mmdet.registry.DATASETS``) and :class:`DemoShapesClsDataset` (in
``mmpretrain.registry.DATASETS``)."""
from .demo_datasets import DemoShapesClsDataset, DemoShapesDataset
from .demo_shapes import (DEMO_SHAPES_CLASSES, DEMO_SHAPES_PALETTE, ensure_demo_shapes,
                          ensure_demo_shapes_cls, generate_demo_shapes, generate_demo_shapes_cls)

__all__ = [
    'DEMO_SHAPES_CLASSES', 'DEMO_SHAPES_PALETTE', 'generate_demo_shapes', 'ensure_demo_shapes',
    'generate_demo_shapes_cls', 'ensure_demo_shapes_cls', 'DemoShapesDataset',
    'DemoShapesClsDataset'
]
