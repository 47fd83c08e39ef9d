"""Cells of 03_network.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 03 · The network: VGG16 base, extra layers, heads

The whole of SSD at test time, in one picture: one network turns the image into six feature
maps, every cell of every map predicts its default boxes (4 offsets and $K + 1$ class scores
each, $K = 20$ VOC classes and background: an $8732 \times 25$ array for SSD300), and two steps
that are not a network, decoding and non-maximum suppression (notebook 06), turn that array
into a few boxes.
"""),
("code", r"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, Rectangle

from minissd import viz
from minissd.config import ssd300, ssd512, tiny
from minissd.data.augment import resize
from minissd.data.photos import normalised_boxes, photo
from minissd.model import SSD
from minissd.plan import format_plan, layer_plan, source_sizes
from minissd.ops.conv import conv2d_forward

cfg = ssd300()
P, K = cfg.num_priors(), len(cfg.class_names)
astro = photo("astronaut")                       # NASA, public domain (minissd.data.photos)
fig, ax = plt.subplots(figsize=(16, 4.6))
ax.set_xlim(0, 16), ax.set_ylim(0, 4.6), ax.set_axis_off()
ax.imshow(resize(astro.image, 300), extent=(0.1, 2.6, 0.8, 3.3))
ax.text(1.35, 0.45, "image\n300 x 300 x 3", ha="center", va="center", fontsize=10)
x = 3.3
for f, c in zip(cfg.feature_maps, (512, 1024, 512, 256, 256, 256)):
    side = 0.5 + 2.0 * f / 38                                   # drawn size grows with f_k
    ax.add_patch(Rectangle((x, 2.05 - side / 2), 0.5 * side, side, facecolor="tab:blue",
                           alpha=0.35, edgecolor="tab:blue"))
    ax.text(x + 0.25 * side, 2.05 - side / 2 - 0.25, f"{f}x{f}\nx{c}", ha="center", va="top",
            fontsize=8)
    x += 0.5 * side + 0.25
ax.text(5.4, 4.2, "six feature maps (network: VGG16 base + extra layers)", ha="center",
        fontsize=10)
ax.add_patch(Rectangle((9.3, 0.7), 0.9, 2.7, facecolor="tab:orange", alpha=0.4,
                       edgecolor="tab:orange"))
ax.text(9.75, 2.05, f"{P}\nx\n(4 + {K + 1})", ha="center", va="center", fontsize=10)
ax.text(9.75, 4.2, "heads: per box\n4 offsets, 21 scores", ha="center", fontsize=10)
for xc, label in ((11.2, "decode\n(offsets +\ndefault boxes)"), (12.7, "NMS\nper class")):
    ax.add_patch(Rectangle((xc - 0.6, 1.45), 1.2, 1.2, facecolor="lightgray", edgecolor="gray"))
    ax.text(xc, 2.05, label, ha="center", va="center", fontsize=9)
ax.text(11.95, 4.2, "no network: notebook 06", ha="center", fontsize=10)
ax.imshow(resize(astro.image, 300), extent=(13.5, 16.0, 0.8, 3.3))
for box in normalised_boxes(astro)[[0, 1, 4]]:                 # person, head, flag
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((13.5 + 2.5 * x0, 3.3 - 2.5 * y1), 2.5 * (x1 - x0),
                           2.5 * (y1 - y0), fill=False, edgecolor="yellow", linewidth=1.5))
ax.text(14.75, 0.45, "boxes, classes, scores", ha="center", va="center", fontsize=10)
for x0, x1 in ((2.65, 3.25), (8.75, 9.25), (10.25, 10.55), (11.85, 12.05), (13.35, 13.45)):
    ax.add_patch(FancyArrowPatch((x0, 2.05), (x1, 2.05), arrowstyle="-|>", mutation_scale=15))
ax.set_title("SSD300 at test time: one forward pass, then decoding and NMS", fontsize=12)
plt.show()
assert (P, K + 1) == (8732, 21) and cfg.feature_maps == (38, 19, 10, 5, 3, 1)
"""),
("md", r"""
`minissd.model.SSD(config)` builds SSD300 from `minissd.config.ssd300()`:

1. **VGG16 base**, conv1_1 .. conv5_3 (3x3 convs with ReLU, 2x2 max pools; the third pool in
   ceil mode so that 75 → 38), then VGG's fully connected fc6/fc7 turned into convolutions:
   pool5 3x3/1, **conv6** 3x3 with dilation 6, **conv7** 1x1.
2. **L2Norm** on conv4_3's output (its activations are much larger than the later maps').
3. **Extra layers** conv8 .. conv11, each a 1x1 conv then a 3x3 conv. conv8_2 and conv9_2
   (stride 2, padding 1) halve the map, 19 → 10 → 5; conv10_2 and conv11_2 are unpadded 3x3
   convs with stride 1, which take 2 cells off the side: 5 → 3 → 1.
4. **Heads**: per source map, a 3x3 conv to $4 B_k$ offsets and one to $(K + 1) B_k$ class
   scores, $B_k$ default boxes per location, $K$ object classes plus background. (Below, $C$
   always counts channels, never classes.)

We run one 300x300 image through it layer by layer and write down every shape.
"""),
("code", r"""
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
# (out channels, kernel, stride, padding) of conv8_2 .. conv11_2: two halve, two shrink by 2
assert cfg.extras[1::2] == ((512, 3, 2, 1), (256, 3, 2, 1), (256, 3, 1, 0), (256, 3, 1, 0))
assert sum(p.num_params for p in plan) == model.num_parameters()
"""),
("md", r"""
## Where 8732 comes from

Head $k$ turns source map $k$ ($f_k \times f_k$, $C_k$ channels) into $(1, 4 B_k, f_k, f_k)$
offsets and $(1, (K + 1) B_k, f_k, f_k)$ scores. Moving channels last and flattening gives
$f_k^2 B_k$ boxes per map, ordered row, column, box: the order of `priors.default_boxes`.
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

VGG16 ends in three fully connected layers, fc6 $(4096, 7 \cdot 7 \cdot 512)$, fc7
$(4096, 4096)$ and fc8 $(1000, 4096)$, ImageNet's 1000 classes: 123.6M of its 138M
parameters. SSD drops fc8 and turns fc6 and fc7 into conv6 and conv7 with a quarter of the
channels: 5.8M parameters, 21 times fewer.
"""),
("code", r"""
fc = {"fc6": 4096 * 7 * 7 * 512 + 4096, "fc7": 4096 * 4096 + 4096, "fc8": 1000 * 4096 + 1000}
params = dict(model.params())
conv67 = {"conv6": params["vgg.31.weight"].size + params["vgg.31.bias"].size,
          "conv7": params["vgg.33.weight"].size + params["vgg.33.bias"].size}
print("VGG16:", {k: f"{v:,}" for k, v in fc.items()}, f"= {sum(fc.values()):,}")
print("SSD:  ", {k: f"{v:,}" for k, v in conv67.items()}, f"= {sum(conv67.values()):,}",
      f"({sum(fc.values()) / sum(conv67.values()):.0f}x fewer)")
assert sum(fc.values()) == 123_642_856 and round(sum(fc.values()) / 1e6, 1) == 123.6
assert conv67 == {"conv6": 4_719_616, "conv7": 1_049_600}
assert round(sum(conv67.values()) / 1e6, 1) == 5.8
assert round(sum(fc.values()) / sum(conv67.values())) == 21
assert params["vgg.31.weight"].shape == (1024, 512, 3, 3)
conv1_5 = sum(v.size for n, v in params.items()                     # VGG16's 13 convs, as SSD's
              if n.startswith("vgg.") and int(n.split(".")[1]) < 30)
print(f"VGG16 in all: {conv1_5:,} (convs) + {sum(fc.values()):,} (fc) = "
      f"{conv1_5 + sum(fc.values()):,}")
assert round((conv1_5 + sum(fc.values())) / 1e6) == 138
"""),
("md", r"""
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
top = max(norm_before.max(), norm_after.max(), norm_conv7.max())
fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), layout="constrained")
titles = (f"conv4_3 (random init): norms {norm_before.min():.2f} .. {norm_before.max():.2f}",
          "L2Norm(conv4_3): every position 20",
          f"conv7 (19x19): norms {norm_conv7.min():.2f} .. {norm_conv7.max():.2f}")
for ax, m, t in zip(axes, (norm_before, norm_after, norm_conv7), titles):
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=top)         # one colour scale for all three
    ax.set_title(t, fontsize=10)
    ax.set_axis_off()
fig.colorbar(im, ax=axes, shrink=0.8, label="L2 norm over channels")
plt.show()
"""),
("md", r"""
## Any input size

Every layer is a convolution or a pooling, so the network has no fixed input size: the same
weights run on a larger image and simply give larger maps, and more default boxes. minissd's
`tiny` config shows it (its default boxes follow the maps: `tiny(image_size=S)`); the
published SSD300 and SSD512 are trained at one size each, and their default boxes are tied to it.
"""),
("code", r"""
net128 = SSD(tiny())
net256 = SSD(tiny(image_size=256))
net256.load_state_dict(net128.state_dict())          # the same weights: no shape depends on S
for net, side in ((net128, 128), (net256, 256)):
    net.eval()
    loc, conf = net.forward(rng.standard_normal((1, 3, side, side)).astype(np.float32),
                            keep_cache=False)
    print(f"{side}x{side}: maps {net.config.feature_maps}, loc {loc.shape}, conf {conf.shape}")
    assert loc.shape == (1, net.config.num_priors(), 4)
assert net128.config.num_priors() == 5620 and net128.num_parameters() == net256.num_parameters()
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
