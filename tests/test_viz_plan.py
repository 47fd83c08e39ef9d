"""viz.draw_plan: the block diagram of notebook 03 says what the plan says, for every config."""
import pytest

from minissd import viz
from minissd.config import ssd300, ssd512, tiny
from minissd.plan import layer_plan


@pytest.mark.parametrize("make", [ssd300, ssd512, tiny])
def test_diagram_shows_every_source_and_its_boxes(make):
    cfg = make()
    ax = viz.draw_plan(layer_plan(cfg), title=cfg.name)
    texts = [t.get_text() for t in ax.texts]
    sources = [t for t in texts if t.startswith("source ")]
    assert len(sources) == len(cfg.feature_maps)
    for k, (f, b) in enumerate(zip(cfg.feature_maps, cfg.mbox)):
        assert f"{f}x{f}x" in sources[k]
        assert any(f"{f}x{f}x{b}\n= {f * f * b} boxes" in t and f"conf 3x3: {b}x{cfg.num_classes}"
                   in t for t in texts), (k, f, b)
    assert any(t.startswith(f"sum: {cfg.num_priors()} boxes") for t in texts)
    assert ax.get_title() == cfg.name
