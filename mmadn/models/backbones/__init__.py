from .resnet_adn import ADNBasicBlock, ADNBottleneck, ADNResLayer, ResNetADN

__all__ = ['ResNetADN', 'ADNResLayer', 'ADNBasicBlock', 'ADNBottleneck']
