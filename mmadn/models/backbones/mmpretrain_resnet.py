"""The ResNets of mmadn on mmpretrain's ResNet, registered in mmpretrain's registry:
``ResNetADN`` (the ADN of :mod:`.resnet_adn`) and ``StageResNet`` (of :mod:`.resnet_stages`).

In an mmpretrain config, ``type='ResNetADN'`` / ``'StageResNet'`` build these: they take
mmpretrain's ``ResNet`` arguments, in its order and with its defaults (``norm_eval=False``,
``out_indices=(3, )``, ``stem_channels=64``, ``expansion``, ``drop_path_rate`` ...), and
have mmpretrain's layout (its deep stem of ConvModules, an average pool in a downsample only
where the stride is 2).
"""
from mmpretrain.models.backbones.resnet import BasicBlock, Bottleneck, ResLayer, ResNet
from mmpretrain.registry import MODELS

from ..layers.adaptive_depth import adn_signature
from .resnet_adn import ADNBlockMixin, ADNResLayerMixin, ResNetADNMixin
from .resnet_stages import StageResNetMixin


class ADNBasicBlock(ADNBlockMixin, BasicBlock):
    norm_name_attrs = ('norm1_name', 'norm2_name')


class ADNBottleneck(ADNBlockMixin, Bottleneck):
    norm_name_attrs = ('norm1_name', 'norm2_name', 'norm3_name')


class ADNResLayer(ADNResLayerMixin, ResLayer):
    pass


@MODELS.register_module()
class ResNetADN(ResNetADNMixin, ResNet):
    """mmpretrain's :class:`~mmpretrain.models.backbones.ResNet` with skippable sub-paths
    and skip-aware BatchNorm; ``type='ResNetADN'`` in mmpretrain's registry. The ADN part
    and its keyword-only arguments are those of :class:`.resnet_adn.ResNetADN`."""

    adn_blocks = {BasicBlock: ADNBasicBlock, Bottleneck: ADNBottleneck}
    adn_res_layer = ADNResLayer


@MODELS.register_module()
class StageResNet(StageResNetMixin, ResNet):
    """mmpretrain's ``ResNet`` with ``stage_blocks`` blocks per stage (see
    :class:`.resnet_stages.StageResNet`)."""

    block_types = (BasicBlock, Bottleneck)


ResNetADN.__signature__ = adn_signature(ResNet, ResNetADNMixin)
