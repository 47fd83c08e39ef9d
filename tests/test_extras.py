"""pyproject.toml's extras: one per CUDA major, each carrying its own numba-cuda binding, and
no other extra naming a CUDA major, so that any extra installs next to either CUDA one.

The failure this guards against: `[test]` once asked for numba-cuda[cu13] while `[cuda12]`
asked for numba-cuda[cu12]; `pip install -e '.[test,cuda12]'` then mixed two CUDA binding
majors (cuda-bindings 12 and 13) under one CuPy, or failed to resolve.
"""
import pathlib
import re

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
Requirement = pytest.importorskip("packaging.requirements").Requirement

PYPROJECT = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
EXTRAS = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
CUDA_EXTRA = re.compile(r"cuda(\d+)$")


def cuda_majors(requirement: str) -> set:
    """The CUDA majors a requirement pins: cupy-cuda12x -> {12}, numba-cuda[cu13] -> {13},
    nvidia-*-cu12 / cuda-bindings==12.* style names -> their major."""
    req = Requirement(requirement)
    majors = {int(m) for m in re.findall(r"cupy-cuda(\d+)x?$", req.name)}
    majors |= {int(e[2:]) for e in req.extras if re.fullmatch(r"cu\d+", e)}
    majors |= {int(m) for m in re.findall(r"-cu(\d+)$", req.name)}
    if req.name in ("cuda-bindings", "cuda-python", "cuda-toolkit"):
        majors |= {int(m) for m in re.findall(r"(?:==|~=|>=)\s*(\d+)", str(req.specifier))}
    return majors


def test_cuda_majors_parses_the_names_it_guards():
    assert cuda_majors("cupy-cuda12x>=13.0") == {12}
    assert cuda_majors("numba-cuda[cu13]>=0.15") == {13}
    assert cuda_majors("numba-cuda>=0.15") == set()
    assert cuda_majors("cuda-bindings==12.*") == {12}
    assert cuda_majors("nvidia-nvjitlink-cu12") == {12}


def test_one_extra_per_cuda_major_with_its_cupy_and_numba_binding():
    cuda = {int(CUDA_EXTRA.match(k).group(1)): v for k, v in EXTRAS.items()
            if CUDA_EXTRA.match(k)}
    assert sorted(cuda) == [12, 13]
    for major, reqs in cuda.items():
        names = {Requirement(r).name: Requirement(r) for r in reqs}
        assert f"cupy-cuda{major}x" in names, f"cuda{major}: no cupy-cuda{major}x"
        assert names["numba-cuda"].extras == {f"cu{major}"}, f"cuda{major}: numba-cuda binding"
        assert set().union(*map(cuda_majors, reqs)) == {major}, f"cuda{major} names another major"


@pytest.mark.parametrize("extra", sorted(k for k in EXTRAS if not CUDA_EXTRA.match(k)))
def test_other_extras_name_no_cuda_major(extra):
    """So `.[<extra>,cuda12]` and `.[<extra>,cuda13]` each hold one CUDA major."""
    pinned = {r: cuda_majors(r) for r in EXTRAS[extra] if cuda_majors(r)}
    assert not pinned, f"[{extra}] pins a CUDA major: {pinned}; leave that to cuda12 / cuda13"
