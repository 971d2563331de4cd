from .mobilenet_v2_adn import MobileNetV2ADN
from .resnet_adn import ADNBasicBlock, ADNBottleneck, ADNResLayer, ResNetADN
from .resnet_stages import StageResNet
from .swin_adn import SwinTransformerADN
from .vit_adn import VisionTransformerADN

__all__ = [
    'ResNetADN', 'ADNResLayer', 'ADNBasicBlock', 'ADNBottleneck', 'StageResNet', 'MobileNetV2ADN',
    'VisionTransformerADN', 'SwinTransformerADN'
]
