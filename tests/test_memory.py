"""The step memory estimate (minissd/bench/memory.py) against what NumPy allocates on the CPU
(tracemalloc), and what it says about the memory plan."""
import pytest

from minissd.bench import memory
from minissd.bench.model import main as bench_model
from minissd.ops.conv import conv_memory, set_conv_memory

TOLERANCE = 0.10          # |estimate / measured - 1|; measured: within 0.02 (module docstring)


@pytest.fixture
def restore_conv_memory():
    old = conv_memory()
    yield
    set_conv_memory(**old)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("keep", ["input", "cols"])
def test_estimate_agrees_with_tracemalloc_tiny(batch, keep, restore_conv_memory):
    set_conv_memory(keep=keep)
    est = memory.step_memory("tiny", batch, keep=keep).peak
    got = memory.measured_peak("tiny", batch)
    assert abs(est / got - 1) < TOLERANCE, (est, got)


@pytest.mark.slow
def test_estimate_agrees_with_tracemalloc_ssd300(restore_conv_memory):
    set_conv_memory(keep="input")
    est = memory.step_memory("ssd300", 1, keep="input").peak
    got = memory.measured_peak("ssd300", 1)
    assert abs(est / got - 1) < TOLERANCE, (est, got)


def test_keeping_inputs_is_what_fits_ssd300_at_batch_32_in_12_gib():
    inputs = memory.step_memory("ssd300", 32, keep="input")
    cols = memory.step_memory("ssd300", 32, keep="cols")
    assert cols.caches > 5 * inputs.caches
    assert inputs.peak < 12 * memory.GIB < cols.peak
    adam = memory.step_memory("ssd300", 32, optimizer="adam", keep="input")
    assert adam.optimizer == 2 * inputs.optimizer == 2 * inputs.params
    assert adam.peak - inputs.peak == inputs.params


def test_largest_batch_is_the_last_that_fits():
    size = 2 * memory.GIB
    b = memory.largest_batch("ssd300", size)
    assert b >= 1
    assert memory.step_memory("ssd300", b).peak <= size < memory.step_memory("ssd300", b + 1).peak
    assert memory.largest_batch("ssd300", 1000) == 0


def test_bench_model_memory_prints_the_table(capsys):
    assert bench_model(["--memory", "--config", "tiny", "--batch", "1", "4", "--fit", "1"]) == 0
    out = capsys.readouterr().out
    assert "peak MiB" in out and "largest batch that fits" in out
    assert out.count("tiny ") >= 4 + 2          # 2 batches x 2 keeps, and the fit rows


def test_bench_model_memory_names_a_bad_config(capsys):
    assert bench_model(["--memory", "--config", "ssd301"]) == 2
    assert "--config ssd301" in capsys.readouterr().err


def test_python_m_minissd_bench_passes_a_topics_usage_error_on(capsys):
    from minissd.bench.__main__ import main as bench
    assert bench(["model", "--memory", "--config", "ssd301", "--device", "cpu"]) == 2
    assert "--config ssd301" in capsys.readouterr().err
