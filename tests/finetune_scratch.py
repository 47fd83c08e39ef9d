"""The network of a --weights file trained from scratch (the baseline of the README's
fine-tuning figures): python -m minissd.train with everything as given, except that nothing is
taken from the file, so the run starts from --seed's random init, with the file's network,
preprocessing, default boxes and post-processing:

    python tests/finetune_scratch.py --voc-root DIR --weights opencv-face [train's flags]
"""
import sys

from minissd import train
from minissd.training import finetune


def own_init(parent_state, parent_config, model):
    """finetune.start_state taking nothing: the model's own random init."""
    return model.state_dict(), {"taken": [], "new": [], "heads_kept": False}


if __name__ == "__main__":
    finetune.start_state = own_init
    sys.exit(train.main(sys.argv[1:]))
