"""What the command-line tests share: the flags of a two-step run, and the check that a
command ends with ONE error line and exit status 2 (minissd/cli.py's contract)."""
import pytest

from minissd import train
from minissd.cli import CommandError

FAST = ["--iters", "2", "--batch-size", "2", "--workers", "1", "--no-progress", "--device",
        "cpu", "--eval-every", "0", "--log-every", "1", "--procs", "1"]


def fails(argv, capsys, module=train):
    """Run module.main(argv), expect its one-line error (exit 2, no traceback); return it."""
    with pytest.raises(CommandError) as e:
        module.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    # what the command found may come first (the classes, a made split); then ONE error line
    assert e.value.code == 2 and "Traceback" not in "".join(lines)
    assert [ln for ln in lines if ": error: " in ln] == lines[-1:]
    assert lines[-1].startswith(f"minissd.{module.__name__.split('.')[-1]}: error: ")
    return lines[-1]
