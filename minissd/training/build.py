"""What a run starts from: the network (random init or a pretrained VGG16 base) and the
optimizer its settings name."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..config import CAFFE_PREPROCESS, TORCHVISION_PREPROCESS
from ..inference import CheckpointError
from ..model import SSD
from ..optim import SGD, Adam
from ..weights import load_ssd_pytorch, read_torch_checkpoint, vgg16_from_torchvision


def build_model(config, seed):
    """SSD(config) with its random init drawn from `seed`, on the current device."""
    return SSD(config, rng=np.random.default_rng([seed, 0])).to(backend.get_device())


def build_optimizer(settings):
    """Adam or SGD with momentum, with the settings' weight decay and gradient clipping."""
    if settings.optimizer == "adam":
        return Adam(weight_decay=settings.weight_decay, clip_norm=settings.clip_norm)
    return SGD(settings.momentum, settings.weight_decay, settings.clip_norm)


def load_pretrained_vgg(model, path):
    """Copy VGG16 base weights from a torchvision or vgg16_reducedfc .pth into the model
    (ssd300 or ssd512). Returns the preprocessing those weights expect."""
    state = read_torch_checkpoint(path)
    if any(k.split(".", 1)[-1].startswith("features.") or k.startswith("features.")
           for k in state):
        vgg, pp = vgg16_from_torchvision(state), dict(TORCHVISION_PREPROCESS)
    else:
        vgg = {k: v for k, v in load_ssd_pytorch(state).items() if k.startswith("vgg.")}
        pp = dict(CAFFE_PREPROCESS)
    own = model.state_dict()
    for k, v in vgg.items():
        if k not in own or tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: {k} {tuple(v.shape)} does not fit the model "
                                  f"({tuple(own[k].shape) if k in own else 'missing'})")
    own.update(vgg)
    model.load_state_dict(own)
    return pp
