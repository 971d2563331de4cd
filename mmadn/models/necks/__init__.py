from .csp_pafpn_adn import YOLOXPAFPNADN, CSPNeXtPAFPNADN

__all__ = ['CSPNeXtPAFPNADN', 'YOLOXPAFPNADN']
