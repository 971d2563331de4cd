# YOLOX-s with mmdet's plain CSPDarknet (the baseline of ./yolox_s_adn_8xb8-300e_coco.py):
# mmdet's config unchanged, listed here beside it.
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'
