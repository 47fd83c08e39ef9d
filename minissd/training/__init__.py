"""Training, as python -m minissd.train runs it (minissd/train.py is the command line):

    settings.py     TrainSettings, one run's settings, and the named defaults
    build.py        the model (random init or a pretrained VGG16 base) and the optimizer
    step.py         forward_backward: one batch's loss and gradients
    loop.py         run(): set up, then per step: step, log, evaluate, save
    log.py          metrics.jsonl, the progress bar, curves.png
    checkpoint.py   last.npz / best.npz: save, read back for --resume, finite checks
"""
