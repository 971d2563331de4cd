from . import mmpretrain_resnet
from .csp_adn import CSPDarknetADN, CSPNeXtADN
from .mobilenet_v2_adn import MobileNetV2ADN
from .resnet_adn import ADNBasicBlock, ADNBottleneck, ADNResLayer, ResNetADN, ResNetADNMixin
from .resnet_stages import StageResNet
from .swin_adn import SwinTransformerADN
from .vit_adn import VisionTransformerADN

__all__ = [
    'ResNetADN', 'ResNetADNMixin', 'ADNResLayer', 'ADNBasicBlock', 'ADNBottleneck', 'StageResNet',
    'mmpretrain_resnet', 'MobileNetV2ADN', 'VisionTransformerADN', 'SwinTransformerADN',
    'CSPNeXtADN', 'CSPDarknetADN'
]
