"""Activation maps of the blocks of one stage, per sub-network (the paper's Figure 4).

For a classifier each block's output gets a Grad-CAM map (the ``grad-cam`` package) of one
class score, the same class for every sub-network; for a detector, which has no single class
score, the map is the activation norm (L2 over channels) of the block's output. The depth is
switched with ``set_skip`` on the one model.

What a map depends on: a block of stage ``s`` outputs the same activations in two
sub-networks that agree on the flags of stages ``1..s`` (the flag of stage ``s`` picks the
shared blocks' skip-aware norms), so their activation-norm maps are identical. A Grad-CAM
map also weighs the activations by the gradient of the class score, which flows back
through the later stages: it changes with the flags of every stage.
"""
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..models.layers import find_adn_backbone
from ..models.layers.skip import SkipLike, format_skip, parse_skip

METHODS = ('gradcam', 'actnorm')
METHOD_TITLES = {'gradcam': 'Grad-CAM', 'actnorm': 'activation norm (L2 over channels)'}
_INSTALL_HINT = 'pip install -r requirements/analysis.txt (the grad-cam package)'


def _grad_cam():
    try:
        import pytorch_grad_cam
    except ImportError as err:  # pragma: no cover - installed by the test requirements
        raise ImportError(f'activation maps need grad-cam: {_INSTALL_HINT}') from err
    return pytorch_grad_cam


@dataclass
class SubnetMaps:
    """The maps of :func:`subnet_maps`, one row per sub-network, one column per block.

    Args:
        skips: the sub-networks, e.g. ``['FFFF', 'TTFF', 'TTTT']``.
        blocks: block names relative to the backbone (``'layer3.0'`` ...).
        skippable: per block, whether it belongs to its stage's skippable sub-path.
        maps: ``(rows, blocks, H, W)`` float32; each map scaled to ``[0, 1]`` on its own,
            NaN where the sub-network skips the block.
        method: ``'gradcam'`` or ``'actnorm'``.
        task: ``'classifier'`` or ``'detector'``.
        image: ``(H, W, 3)`` uint8 RGB, the network's input before normalization.
        predictions: per row; a classifier's: ``label``, ``score``, ``topk`` (pairs of
            label and probability), ``target_score`` (the probability of
            ``target_class``); a detector's: ``bboxes`` (on ``image``), ``labels``,
            ``scores`` of the detections scoring at least ``score_thr``.
        target_class: the class explained by Grad-CAM (None for the activation norm).
        class_names: class names, if known.
        score_thr: a detector's score threshold.
    """
    skips: List[str]
    blocks: List[str]
    skippable: List[bool]
    maps: np.ndarray
    method: str
    task: str
    image: np.ndarray
    predictions: List[dict]
    target_class: Optional[int] = None
    class_names: Optional[Sequence[str]] = None
    score_thr: float = 0.3
    stages: List[int] = field(default_factory=list)

    def class_name(self, label: int) -> str:
        names = self.class_names
        return str(names[label]) if names is not None and label < len(names) else str(label)


def model_task(model: nn.Module) -> str:
    """``'classifier'`` (an mmpretrain ``ImageClassifier``) or ``'detector'`` (an mmdet
    ``BaseDetector``); anything else is refused."""
    from mmdet.models.detectors import BaseDetector
    from mmpretrain.models.classifiers import ImageClassifier
    if isinstance(model, ImageClassifier):
        return 'classifier'
    if isinstance(model, BaseDetector):
        return 'detector'
    raise TypeError(f'{type(model).__name__}: expected an mmpretrain ImageClassifier or an '
                    'mmdet detector')


def stage_blocks(backbone: nn.Module) -> List[List[Tuple[str, bool]]]:
    """Per stage, ``(block name, skippable)`` of a ``ResNetADN`` backbone."""
    from ..models.backbones.resnet_adn import ResNetADNMixin  # mmdet's or mmpretrain's
    if not isinstance(backbone, ResNetADNMixin):
        raise TypeError(f'the backbone is a {type(backbone).__name__}: per-block maps are '
                        'drawn for ResNetADN backbones (blocks with (N, C, H, W) outputs)')
    return [[(f'{name}.{i}', i >= k) for i in range(len(getattr(backbone, name)))]
            for name, k in zip(backbone.res_layers, backbone.num_shared_blocks)]


def resolve_blocks(backbone: nn.Module, stage: int = 3,
                   blocks: Optional[Sequence[str]] = None) -> Tuple[List[str], List[bool]]:
    """The columns: every block of ``stage`` (1-based: 3 is ``layer3``, the paper's third
    stage), or the named ``blocks`` (``'layer3.0'`` ...) in the given order."""
    stages = stage_blocks(backbone)
    if blocks is None:
        if isinstance(stage, bool) or not isinstance(stage, int) \
                or not 1 <= stage <= len(stages):
            raise ValueError(f'stage={stage!r}: expected 1..{len(stages)} (1-based: 3 is '
                             f'layer3, the third residual stage)')
        names = stages[stage - 1]
        return [n for n, _ in names], [s for _, s in names]
    known = dict(b for st in stages for b in st)
    bad = [b for b in blocks if b not in known]
    if bad or not blocks:
        ranges = ', '.join(f'{st[0][0]}..{st[-1][0].rsplit(".", 1)[1]}' for st in stages)
        raise ValueError(f'block {bad[0] if bad else "(none)"!r} does not exist: expected '
                         f'block names of this backbone ({ranges})')
    return list(blocks), [known[b] for b in blocks]


def load_image(cfg, path: str) -> dict:
    """``path`` through the config's test pipeline (annotation loading left out), as a
    batch of one for ``model.data_preprocessor`` / ``model.test_step``."""
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import TRANSFORMS, DefaultScope
    pipeline = [
        t for t in cfg.test_dataloader.dataset.pipeline
        if 'LoadAnnotations' not in str(t.get('type', ''))
    ]
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        transform = Compose([TRANSFORMS.build(t) for t in pipeline])
        data = transform(dict(img_path=path, img_id=0))
    return pseudo_collate([data])


def _display_image(data: dict) -> np.ndarray:
    img = data['inputs'][0]
    img = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    img = img.transpose(1, 2, 0)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., ::-1]).astype(np.uint8)  # BGR (mmcv) -> RGB


def _finish(cam: np.ndarray, out_hw: Tuple[int, int], crop_hw: Tuple[int, int]) -> np.ndarray:
    """Resize a map to the padded input, crop it to the image, scale it to [0, 1]."""
    import cv2
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != tuple(out_hw):
        cam = cv2.resize(cam, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    cam = cam[:crop_hw[0], :crop_hw[1]]
    cam = cam - cam.min()
    top = cam.max()
    return cam / top if top > 0 else cam


class _Logits(nn.Module):
    """A classifier called on a preprocessed batch returns its class scores."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(x, mode='tensor')


def subnet_maps(model: nn.Module, data: dict, skips: Sequence[SkipLike] = ('FFFF', 'TTFF', 'TTTT'),
                stage: int = 3, blocks: Optional[Sequence[str]] = None,
                method: Optional[str] = None, target_class: Optional[int] = None,
                class_names: Optional[Sequence[str]] = None, topk: int = 3,
                score_thr: float = 0.3) -> SubnetMaps:
    """The maps of the chosen blocks for every sub-network in ``skips``.

    Args:
        model: a classifier or detector with a ``ResNetADN`` backbone (in eval mode; its
            depth is restored afterwards).
        data: one image, as returned by :func:`load_image`.
        skips: the sub-networks, one row each.
        stage: 1-based stage whose blocks are the columns (3: ``layer3``).
        blocks: block names instead of ``stage`` (``['layer3.0', 'layer3.4']``).
        method: ``'gradcam'`` (classifiers; the default for them) or ``'actnorm'`` (the
            only one for detectors, their default).
        target_class: the class Grad-CAM explains in every row; default: the prediction of
            the first sub-network in ``skips``.
        topk: classes listed per row of a classifier's predictions.
        score_thr: a detector's detections kept in ``predictions``.
    """
    task = model_task(model)
    backbone = find_adn_backbone(model)
    method = method or ('gradcam' if task == 'classifier' else 'actnorm')
    if method not in METHODS:
        raise ValueError(f'method={method!r}: expected one of {", ".join(METHODS)}')
    if method == 'gradcam' and task != 'classifier':
        raise ValueError('method=gradcam needs a class score to explain, and a detector has '
                         'none: use method=actnorm (the activation norm, the default for '
                         'detectors)')
    names, skippable = resolve_blocks(backbone, stage, blocks)
    skip_tuples = [parse_skip(s, backbone.num_skippable_stages) for s in skips]
    if not skip_tuples:
        raise ValueError('skips is empty: expected at least one sub-network, e.g. FFFF')
    modules = dict(backbone.named_modules())
    stage_of = {n: backbone.res_layers.index(n.split('.')[0]) for n in names}
    image = _display_image(data)
    crop_hw = image.shape[:2]
    saved = backbone.skip
    rows, preds = [], []
    try:
        if task == 'classifier':
            batch = model.data_preprocessor(data, False)['inputs']
            out_hw = tuple(batch.shape[-2:])
            backbone.set_skip(skip_tuples[0])
            with torch.no_grad():
                first = model(batch, mode='tensor')[0]
            if target_class is not None and (isinstance(target_class, bool)
                                             or not isinstance(target_class, int)
                                             or not 0 <= target_class < first.numel()):
                raise ValueError(f'target_class={target_class!r}: expected a class index in '
                                 f'0..{first.numel() - 1}')
            if method == 'gradcam' and target_class is None:
                target_class = int(first.argmax())
        for skip in skip_tuples:
            backbone.set_skip(skip)
            ran = [not (sk and skip[stage_of[n]]) for n, sk in zip(names, skippable)]
            run_names = [n for n, r in zip(names, ran) if r]
            if task == 'classifier' and method == 'gradcam':
                cams, logits = _gradcam_row(model, batch, [modules[n] for n in run_names],
                                            target_class)
            elif task == 'classifier':
                cams, logits = _actnorm_row(lambda: model(batch, mode='tensor'),
                                            [modules[n] for n in run_names])
            else:
                cams, result = _actnorm_row(lambda: model.test_step(data)[0],
                                            [modules[n] for n in run_names])
                meta = result.metainfo
                out_hw = tuple(meta['batch_input_shape'])
                preds.append(_detections(result, score_thr))
            it = iter(cams)
            rows.append(
                np.stack([
                    _finish(next(it), out_hw, crop_hw) if r else np.full(
                        crop_hw, np.nan, np.float32) for r in ran
                ]))
            if task == 'classifier':
                prob = torch.softmax(logits.detach().float()[0], dim=0)
                k = min(topk, prob.numel())
                top = prob.topk(k)
                preds.append(
                    dict(label=int(top.indices[0]), score=float(top.values[0]),
                         topk=[(int(i), float(v)) for i, v in zip(top.indices, top.values)],
                         target_score=None if target_class is None else float(prob[target_class])))
    finally:
        backbone.set_skip(saved)
    return SubnetMaps(skips=[format_skip(s)
                             for s in skip_tuples], blocks=names, skippable=skippable,
                      maps=np.stack(rows).astype(np.float32), method=method, task=task, image=image,
                      predictions=preds, target_class=target_class if method == 'gradcam' else None,
                      class_names=class_names, score_thr=score_thr,
                      stages=sorted({stage_of[n] + 1
                                     for n in names}))


def _gradcam_row(model, batch, layers, target_class):
    """Grad-CAM of each layer (one forward and backward each, the package's own call)."""
    gc = _grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    wrapped = _Logits(model)
    cams, logits = [], None
    with torch.enable_grad():
        for layer in layers:
            cam = gc.GradCAM(model=wrapped, target_layers=[layer])
            try:
                cams.append(
                    cam(input_tensor=batch, targets=[ClassifierOutputTarget(target_class)])[0])
                logits = cam.outputs
            finally:
                cam.activations_and_grads.release()
    if logits is None:  # no block of the row ran
        with torch.no_grad():
            logits = wrapped(batch)
    model.zero_grad(set_to_none=True)
    return cams, logits


def _actnorm_row(forward, layers):
    """The L2 norm over channels of each layer's output, from one forward pass."""
    found: Dict[int, torch.Tensor] = {}

    def hook(idx):

        def save(module, inputs, output):
            found[idx] = output.detach().float().norm(dim=1)[0].cpu().numpy()

        return save

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            out = forward()
    finally:
        for h in handles:
            h.remove()
    return [found[i] for i in range(len(layers))], out


def _detections(result, score_thr: float) -> dict:
    inst = result.pred_instances
    keep = inst.scores >= score_thr
    bboxes = inst.bboxes[keep].detach().cpu().numpy()
    scale = result.metainfo.get('scale_factor')
    if scale is not None:  # predictions are on the original image; draw on the input
        bboxes = bboxes * np.array(list(scale) * 2, dtype=np.float32)
    return dict(bboxes=bboxes, labels=inst.labels[keep].cpu().numpy(),
                scores=inst.scores[keep].detach().cpu().numpy())


def _row_label(skip: str) -> str:
    if set(skip) == {'F'}:
        return f'{skip}\n(super-net)'
    if set(skip) == {'T'}:
        return f'{skip}\n(base-net)'
    return skip


def plot_subnet_maps(result: SubnetMaps, out: Optional[str] = None, title: Optional[str] = None):
    """The grid: a row per sub-network; columns: the input, one map per block (grey where
    the block is skipped), the prediction. Returns ``(figure, axes)``, axes of shape
    ``(rows, 2 + blocks)``; ``out`` (a .png path) is written if given."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    show_cam_on_image = _grad_cam().utils.image.show_cam_on_image

    nrows, ncols = len(result.skips), len(result.blocks) + 2
    fig = Figure(figsize=(1.9 * ncols + 0.6, 1.9 * nrows + 0.9), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    img = result.image.astype(np.float32) / 255
    for r, skip in enumerate(result.skips):
        row = axes[r]
        row[0].imshow(result.image)
        row[0].set_ylabel(_row_label(skip), fontsize=10, rotation=0, ha='right', va='center')
        for c, name in enumerate(result.blocks):
            ax = row[c + 1]
            cam = result.maps[r, c]
            if np.isnan(cam).all():
                ax.imshow(np.full_like(img, 0.85))
                ax.text(0.5, 0.5, 'skipped', transform=ax.transAxes, ha='center', va='center',
                        fontsize=10, color='0.35')
            else:
                ax.imshow(show_cam_on_image(img, cam, use_rgb=True))
        _draw_prediction(row[-1], result, r, Rectangle)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title('input', fontsize=9)
    for c, (name, sk) in enumerate(zip(result.blocks, result.skippable)):
        axes[0, c + 1].set_title(f'{name}\n{"skippable" if sk else "shared"}', fontsize=9,
                                 color='tab:red' if sk else 'black')
    axes[0, -1].set_title(
        'prediction' if result.task == 'classifier' else f'detections >= {result.score_thr:g}',
        fontsize=9)
    fig.suptitle(title or default_title(result), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    if out:
        if osp.dirname(out):
            os.makedirs(osp.dirname(out), exist_ok=True)
        fig.savefig(out)
    return fig, axes


def default_title(result: SubnetMaps) -> str:
    where = (f'stage {result.stages[0]}' if len(result.stages) == 1 else 'stages ' +
             ', '.join(map(str, result.stages)))
    if result.method == 'gradcam':
        first = f"Grad-CAM of class '{result.class_name(result.target_class)}' " \
                f'(every row) at the block outputs of {where}'
    else:
        first = f'Activation norm (L2 over channels) of the block outputs of {where}'
        if result.task == 'detector':
            first += ' (a detector: no class score for Grad-CAM)'
    return first + '\neach map scaled to [0, 1] on its own'


def _draw_prediction(ax, result: SubnetMaps, r: int, Rectangle) -> None:
    pred = result.predictions[r]
    if result.task == 'classifier':
        labels = [result.class_name(i) for i, _ in pred['topk']][::-1]
        scores = [s for _, s in pred['topk']][::-1]
        colors = ['tab:red' if i == result.target_class else 'tab:blue'
                  for i, _ in pred['topk']][::-1]
        ax.barh(range(len(scores)), scores, color=colors)
        ax.set_xlim(0, 1)
        for y, (name, s) in enumerate(zip(labels, scores)):
            ax.text(0.02, y, f'{name} {s:.2f}', va='center', fontsize=8)
        ax.set_box_aspect(1)
        return
    ax.imshow(result.image)
    for (x1, y1, x2, y2), label in zip(pred['bboxes'], pred['labels']):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color='lime', lw=1))
        ax.text(x1, y1, result.class_name(int(label)), fontsize=6, color='lime', va='bottom')
    ax.set_xlabel(f'{len(pred["labels"])} found', fontsize=8)


def class_names_of(cfg, meta: dict) -> Optional[List[str]]:
    """Class names from a checkpoint's ``meta`` or the config's test dataset class."""
    classes = (meta.get('dataset_meta') or {}).get('classes')
    if classes:
        return list(classes)
    try:
        from mmengine.registry import DATASETS, DefaultScope
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            cls = DATASETS.get(cfg.test_dataloader.dataset.type)
        classes = getattr(cls, 'METAINFO', {}).get('classes')
    except Exception:  # noqa: BLE001 - names are a nicety; indices are shown instead
        classes = None
    return list(classes) if classes else None
