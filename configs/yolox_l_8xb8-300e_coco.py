# YOLOX-l with mmdet's plain CSPDarknet (the baseline of ./yolox_l_adn_8xb8-300e_coco.py):
# mmdet's config unchanged, listed here beside it.
_base_ = 'mmdet::yolox/yolox_l_8xb8-300e_coco.py'
