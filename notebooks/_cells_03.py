"""Cells of 03_network.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 03 · The network: VGG16 base, extra layers, heads

`minissd.model.SSD(config)` builds SSD300 from `minissd.config.ssd300()`:

1. **VGG16 base**, conv1_1 .. conv5_3 (3x3 convs with ReLU, 2x2 max pools; the third pool in
   ceil mode so that 75 → 38), then VGG's fully connected fc6/fc7 turned into convolutions:
   pool5 3x3/1, **conv6** 3x3 with dilation 6, **conv7** 1x1.
2. **L2Norm** on conv4_3's output (its activations are much larger than the later maps').
3. **Extra layers** conv8 .. conv11 (1x1 then 3x3), each halving the map or shrinking it to 1x1.
4. **Heads**: per source map, a 3x3 conv to $k \cdot 4$ offsets and one to $k \cdot C$ class
   scores, $k$ default boxes per location.

We run one 300x300 image through it layer by layer and write down every shape.
"""),
("code", r"""
import matplotlib.pyplot as plt
import numpy as np

from minissd import viz
from minissd.config import ssd300, ssd512, tiny
from minissd.model import SSD
from minissd.plan import format_plan, layer_plan, source_sizes
from minissd.ops.conv import conv2d_forward

cfg = ssd300()
model = SSD(cfg)
print(model)
print("base list:", cfg.base)
"""),
("md", r"""
## The layer plan: shapes through SSD300

Each 3x3 conv with padding 1 keeps the size; each 2x2/2 pool halves it (ceil mode rounds up).
Output size of a conv: $H_o = \lfloor (H + 2p - d(k-1) - 1)/s \rfloor + 1$.

`minissd.plan.layer_plan(config)` applies these formulas to the config once and lists every
layer in forward order: its name in the state dict, its input and output shapes, its
parameters and which source map it makes or reads. It is the one description of the network:
`SSD` builds its layers from it, and so do the benchmark's PyTorch twin and the default-box
sizes. (The ReLU after each conv is in the plan too; the table hides it unless its output is
a source.)
"""),
("code", r"""
plan = layer_plan(cfg)
print(format_plan(plan))
"""),
("md", r"""
## The network as one picture

`minissd.viz.draw_plan` draws the plan as a block diagram: the input, the six source maps
(block height grows with the map's side), the trunk layers between them written on the
arrows, and under each source its two heads and the default boxes it predicts. The picture is
read from `layer_plan`, never typed in, so the same call draws SSD300, SSD512 (seven sources,
24564 boxes) and the `tiny` config of the CPU runs (batch norm after every conv, 5620 boxes).
"""),
("code", r"""
configs = [ssd300(), ssd512(), tiny()]
fig, axes = plt.subplots(3, 1, figsize=(16, 13.5))
for ax, c in zip(axes, configs):
    viz.draw_plan(layer_plan(c), ax=ax, title=f"{c.name}: {c.image_size}x{c.image_size} input, "
                  f"{len(c.feature_maps)} sources, {c.num_priors()} default boxes")
fig.tight_layout()
plt.show()

# What the diagram writes under each source, recomputed from the plan: f * f * (loc channels / 4).
for c in configs:
    p = layer_plan(c)
    per_source = [q.out_shape[1] * q.out_shape[2] * q.out_shape[0] // 4 for q in p
                  if q.stage == "loc"]
    print(f"{c.name:>7}: {' + '.join(map(str, per_source))} = {sum(per_source)}")
    assert sum(per_source) == c.num_priors()
assert [c.num_priors() for c in configs] == [8732, 24564, 5620]
"""),
("md", r"""
Now run one 300x300 image through the model's layers one at a time, the same steps as
`SSD.forward`, and check every output against the plan.
"""),
("code", r"""
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 3, 300, 300)).astype(np.float32)
planned = {p.name: p for p in plan}
sources = []
h = x
for i, layer in enumerate(model.vgg):
    h = layer.forward(h)
    assert h.shape[1:] == planned[f"vgg.{i}"].out_shape, (i, h.shape)
    if i == model.l2norm_index:                 # conv4_3's ReLU: the L2Norm branch
        conv4_3 = h
        sources.append(model.L2Norm.forward(h))
sources.append(h)                               # conv7's ReLU
for j, unit in enumerate(model.extras):
    h = unit.forward(h)
    assert h.shape[1:] == planned[f"extras.{j}"].out_shape, (j, h.shape)
    if j in model.source_extras:                # conv8_2, conv9_2, ...
        sources.append(h)
print("source maps:", [s.shape[1:] for s in sources])
"""),
("code", r"""
assert tuple(s.shape[2] for s in sources) == cfg.feature_maps == source_sizes(cfg) \
    == (38, 19, 10, 5, 3, 1)
assert tuple(s.shape[1] for s in sources) == (512, 1024, 512, 256, 256, 256)
assert sum(p.num_params for p in plan) == model.num_parameters()
"""),
("md", r"""
## Where 8732 comes from

Head $k$ turns source map $k$ ($f_k \times f_k$, $C_k$ channels) into $(1, k_k \cdot 4, f_k, f_k)$
offsets and $(1, k_k \cdot C, f_k, f_k)$ scores. Moving channels last and flattening gives
$f_k^2 k_k$ boxes per map, ordered row, column, box: the order of `priors.default_boxes`.
"""),
("code", r"""
total = 0
heads = model.heads                             # layers.MultiBoxHeads: every loc and conf conv
for k, (s, lconv, cconv, nbox) in enumerate(zip(sources, heads.loc, heads.conf, cfg.mbox)):
    loc_k, conf_k = lconv.forward(s), cconv.forward(s)
    f = s.shape[2]
    total += f * f * nbox
    print(f"source {k}: {str(s.shape):<20} loc {str(loc_k.shape):<18} "
          f"conf {str(conf_k.shape):<19} -> {f}x{f}x{nbox} = {f * f * nbox:>5} boxes")
print("total", total)

loc, conf = model.forward(x, keep_cache=False)
print("model.forward:", loc.shape, conf.shape)
assert total == 8732 and loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
# box p of source 0, cell (0, 0): the first 4 rows of loc are channel groups 0..3, 4..7, ...
assert np.allclose(loc[0, :4].ravel(), heads.loc[0].forward(sources[0])[0, :16, 0, 0],
                   atol=1e-5)
"""),
("md", r"""
### A head worked by hand

The walkthrough SSD was explained from works one head through with round numbers: a
$5 \times 5 \times 256$ feature map, **3 default boxes per cell** and 21 classes (VOC's 20 and
background). The localisation head is a 3x3 convolution (padding 1, so the map stays 5x5) with
$3 \cdot 4 = 12$ filters, the confidence head one with $3 \cdot 21 = 63$ filters:

$$5 \times 5 \times 256 \;\xrightarrow{\;3\times3,\ 12\;}\; 5 \times 5 \times 12, \qquad
5 \times 5 \times 256 \;\xrightarrow{\;3\times3,\ 63\;}\; 5 \times 5 \times 63.$$

Channels last and flattened, that is $5 \cdot 5 \cdot 3 = 75$ boxes: a $75 \times 4$ block of
offsets and a $75 \times 21$ block of class scores. Row $p = (i \cdot 5 + j) \cdot 3 + b$ is box $b$
of cell $(i, j)$: its offsets are channels $4b .. 4b + 3$ of the loc map at $(i, j)$, its scores
channels $21b .. 21b + 20$ of the conf map. (SSD300's real 5x5 map, conv9_2, has 256 channels
too but 6 boxes per cell: 24 and 126 filters, 150 boxes.)
"""),
("code", r"""
fmap = rng.standard_normal((1, 256, 5, 5)).astype(np.float32)       # (N, C, H, W)
w_loc = rng.standard_normal((3 * 4, 256, 3, 3)).astype(np.float32) * 0.02
w_conf = rng.standard_normal((3 * 21, 256, 3, 3)).astype(np.float32) * 0.02
loc_map, _ = conv2d_forward(fmap, w_loc, np.zeros(12, np.float32), padding=1)    # (1, 12, 5, 5)
conf_map, _ = conv2d_forward(fmap, w_conf, np.zeros(63, np.float32), padding=1)  # (1, 63, 5, 5)
loc_boxes = loc_map.transpose(0, 2, 3, 1).reshape(1, -1, 4)          # (1, 75, 4)
conf_boxes = conf_map.transpose(0, 2, 3, 1).reshape(1, -1, 21)       # (1, 75, 21)
print("loc head:", loc_map.shape, "->", loc_boxes.shape, "  conf head:", conf_map.shape, "->",
      conf_boxes.shape)
print("weights: loc", w_loc.size + 12, " conf", w_conf.size + 63)
assert loc_map.shape == (1, 12, 5, 5) and conf_map.shape == (1, 63, 5, 5)
assert loc_boxes.shape == (1, 75, 4) and conf_boxes.shape == (1, 75, 21)
i, j, b = 2, 4, 1                                                   # box 1 of cell (2, 4)
row = (i * 5 + j) * 3 + b
assert np.array_equal(loc_boxes[0, row], loc_map[0, 4 * b:4 * b + 4, i, j])
assert np.array_equal(conf_boxes[0, row], conf_map[0, 21 * b:21 * b + 21, i, j])

heads300 = {q.name: q for q in plan if q.stage in ("loc", "conf")}
print("SSD300's conv9_2 heads:", heads300["loc.3"].out_shape, heads300["conf.3"].out_shape)
assert heads300["loc.3"].in_shape == (256, 5, 5)
assert heads300["loc.3"].out_shape == (24, 5, 5) and heads300["conf.3"].out_shape == (126, 5, 5)
"""),
("md", r"""
## fc6/fc7 as convolutions: decimation and dilation

In VGG16, pool5 halves the 14x14 map to 7x7 and fc6 is a 7x7 convolution with 4096 filters,
$(4096, 512, 7, 7)$ = 102M weights. SSD keeps the 19x19 map (pool5 becomes 3x3, stride 1) and
**decimates** fc6: every 4th filter and every 3rd kernel tap, $(1024, 512, 3, 3)$
(`minissd.weights.vgg16_from_torchvision` does `w[::4, :, ::3, ::3]`).

Taps 0, 3, 6 of a 7x7 kernel are 3 cells apart, so the 3x3 kernel must be **dilated** by 3 to
read the same pixels; and since pool5 no longer halves the map, one cell of the old 7x7 grid is
2 cells of the new one: dilation $3 \times 2 = 6$ (the à trous trick). fc7 becomes a 1x1 conv
with every 4th input and output channel.

Check the first half on a small example: a 7x7 kernel that is zero except on taps 0, 3, 6 gives
exactly the 3x3 kernel with dilation 3.
"""),
("code", r"""
w7 = rng.standard_normal((8, 4, 7, 7))                  # stand-in for fc6 viewed as a conv
w3 = w7[::4, :, ::3, ::3]                               # decimated: (2, 4, 3, 3)
w7_sparse = np.zeros_like(w7[::4])
w7_sparse[:, :, ::3, ::3] = w3                          # only the kept taps
xs = rng.standard_normal((1, 4, 19, 19))
y7, _ = conv2d_forward(xs, w7_sparse, None, padding=3)
y3, _ = conv2d_forward(xs, w3, None, padding=3, dilation=3)
print("decimated kernel", w3.shape, " max |7x7 sparse - 3x3 dilated| =", np.abs(y7 - y3).max())
assert np.allclose(y7, y3)

fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
plain, dilated = np.zeros((13, 13)), np.zeros((13, 13))
plain[5:8, 5:8] = 1                                     # 3x3 kernel, dilation 1
dilated[::6, ::6] = 1                                   # 3x3 kernel, dilation 6
axes[0].imshow(plain, cmap="Oranges", vmin=0, vmax=1.5)
axes[0].set_title("3x3 kernel: reads 3x3 pixels")
axes[1].imshow(dilated, cmap="Oranges", vmin=0, vmax=1.5)
axes[1].set_title("conv6: dilation 6, reads a 13x13 span")
for ax in axes:
    ax.set_xticks(np.arange(-0.5, 13, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, 13, 1), minor=True)
    ax.grid(which="minor", color="gray", linewidth=0.5)
    ax.set_xticks([]), ax.set_yticks([])
plt.show()
"""),
("md", r"""
## L2Norm on conv4_3

conv4_3's features are on a different scale from conv7's; with a learned per-channel scale
$\gamma$ initialised to 20, every position of the first source has norm 20 at the start.
"""),
("code", r"""
norm_before = np.sqrt((conv4_3[0] ** 2).sum(axis=0))          # (38, 38)
norm_after = np.sqrt((sources[0][0] ** 2).sum(axis=0))
norm_conv7 = np.sqrt((sources[1][0] ** 2).sum(axis=0))
print(f"conv4_3 norm: {norm_before.min():.2f} .. {norm_before.max():.2f};  after L2Norm: "
      f"{norm_after.min():.3f} .. {norm_after.max():.3f};  "
      f"conv7: {norm_conv7.min():.2f} .. {norm_conv7.max():.2f}")
assert np.allclose(norm_after[norm_before > 0], 20.0, rtol=1e-4)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
titles = ("conv4_3 (random init)", "L2Norm(conv4_3)", "conv7")
for ax, m, t in zip(axes, (norm_before, norm_after, norm_conv7), titles):
    im = ax.imshow(m, cmap="viridis")
    fig.colorbar(im, ax=ax)
    ax.set_title(f"channel norm: {t}")
    ax.set_axis_off()
plt.show()
"""),
("md", r"""
## Parameters: 26,285,486

ssd.pytorch's SSD300 for 21 classes has 26,285,486 parameters. Most of them are in the base.
"""),
("code", r"""
groups = {}
for name, p in model.params():
    group = "vgg (conv1..5)" if name.startswith("vgg.") and int(name.split(".")[1]) < 30 else \
            "vgg (conv6, conv7)" if name.startswith("vgg.") else name.split(".")[0]
    groups[group] = groups.get(group, 0) + p.size
for group, n in groups.items():
    print(f"{group:<20} {n:>12,}")
print(f"{'total':<20} {model.num_parameters():>12,}")
assert model.num_parameters() == 26_285_486
"""),
("md", r"""
## Exercises

1. Print the plan of SSD512 (`minissd.config.ssd512`) with `minissd.plan.layer_plan`,
   without building the network. Why does it need a fifth extra block? Find it in the diagram.
2. In the worked head example, give the head 6 boxes per cell instead of 3. What are the two
   output shapes, before and after the reshape, and how many weights does each head have?
3. Without ceil mode in pool3, what would the source sizes be? Set the base list's `"C"` to
   `"M"` in a copy of the config and read the error `SSD(...)` raises.
4. How many multiply-adds does one SSD300 forward pass take? Which layer costs the most?
5. Why can conv10_2 and conv11_2 use padding 0 while conv8_2 and conv9_2 use padding 1?
"""),
]
