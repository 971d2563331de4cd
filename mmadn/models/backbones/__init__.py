from .resnet_adn import ADNBasicBlock, ADNBottleneck, ADNResLayer, ResNetADN
from .resnet_stages import StageResNet
from .mobilenet_v2_adn import MobileNetV2ADN
from .vit_adn import VisionTransformerADN
from .swin_adn import SwinTransformerADN

__all__ = ['ResNetADN', 'ADNResLayer', 'ADNBasicBlock', 'ADNBottleneck', 'StageResNet',
           'MobileNetV2ADN', 'VisionTransformerADN', 'SwinTransformerADN']
