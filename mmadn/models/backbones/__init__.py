from .resnet_adn import ADNBasicBlock, ADNBottleneck, ADNResLayer, ResNetADN
from .resnet_stages import StageResNet

__all__ = ['ResNetADN', 'ADNResLayer', 'ADNBasicBlock', 'ADNBottleneck', 'StageResNet']
