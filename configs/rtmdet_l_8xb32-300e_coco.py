# RTMDet-l with mmdet's plain CSPNeXt (the baseline of ./rtmdet_l_adn_8xb32-300e_coco.py):
# mmdet's config, listed here beside it (only auto_scale_lr's base batch size set to the
# recipe's).
_base_ = 'mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py'
# mmdet's RTMDet configs inherit base_batch_size=16 from schedule_1x; they train 8 x 32
auto_scale_lr = dict(base_batch_size=256)
