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

from minissd.config import ssd300
from minissd.model import SSD, source_sizes
from minissd.ops.conv import conv2d_forward

cfg = ssd300()
model = SSD(cfg)
print(model)
print("base list:", cfg.base)
"""),
("md", r"""
## Shapes through SSD300

Each 3x3 conv with padding 1 keeps the size; each 2x2/2 pool halves it (ceil mode rounds up).
Output size of a conv: $H_o = \lfloor (H + 2p - d(k-1) - 1)/s \rfloor + 1$.
"""),
("code", r"""
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 3, 300, 300)).astype(np.float32)
vgg_names = ["conv1_1", "", "conv1_2", "", "pool1", "conv2_1", "", "conv2_2", "", "pool2",
             "conv3_1", "", "conv3_2", "", "conv3_3", "", "pool3 (ceil)", "conv4_1", "",
             "conv4_2", "", "conv4_3", "", "pool4", "conv5_1", "", "conv5_2", "", "conv5_3", "",
             "pool5", "conv6 (fc6)", "", "conv7 (fc7)", ""]
rows, sources = [], []
h = x
for i, layer in enumerate(model.vgg):          # the same steps as SSD.forward, one at a time
    h = layer.forward(h)
    name = vgg_names[i] or "  relu"
    params = sum(v.size for v in layer.params.values())
    rows.append((f"vgg.{i}", name, repr(layer), h.shape, params))
    if i == model.l2norm_index:
        conv4_3 = h
        sources.append(model.L2Norm.forward(h))
        rows.append(("L2Norm", "L2Norm(conv4_3)", repr(model.L2Norm), sources[-1].shape, 512))
sources.append(h)
extra_names = ["conv8_1", "conv8_2", "conv9_1", "conv9_2", "conv10_1", "conv10_2", "conv11_1", "conv11_2"]
for j, conv in enumerate(model.extras):
    h = conv.forward(h)
    rows.append((f"extras.{j}", extra_names[j], repr(conv), h.shape,
                 sum(v.size for v in conv.params.values())))
    if j % 2 == 1:
        sources.append(h)

for key, name, layer, shape, params in rows:
    if name != "  relu":
        print(f"{key:>10}  {name:<16} {layer:<68} {str(shape):<20} {params:>10,}")
"""),
("code", r"""
print("source maps:", [s.shape[1:] for s in sources])
assert tuple(s.shape[2] for s in sources) == cfg.feature_maps == source_sizes(cfg) == (38, 19, 10, 5, 3, 1)
assert tuple(s.shape[1] for s in sources) == (512, 1024, 512, 256, 256, 256)
"""),
("md", r"""
## Where 8732 comes from

Head $k$ turns source map $k$ ($f_k \times f_k$, $C_k$ channels) into $(1, k_k \cdot 4, f_k, f_k)$
offsets and $(1, k_k \cdot C, f_k, f_k)$ scores. Moving channels last and flattening gives
$f_k^2 k_k$ boxes per map, ordered row, column, box: the order of `priors.default_boxes`.
"""),
("code", r"""
total = 0
for k, (s, lconv, cconv, nbox) in enumerate(zip(sources, model.loc, model.conf, cfg.mbox)):
    loc_k, conf_k = lconv.forward(s), cconv.forward(s)
    f = s.shape[2]
    total += f * f * nbox
    print(f"source {k}: {str(s.shape):<20} loc {str(loc_k.shape):<18} conf {str(conf_k.shape):<19} "
          f"-> {f}x{f}x{nbox} = {f * f * nbox:>5} boxes")
print("total", total)

loc, conf = model.forward(x, keep_cache=False)
print("model.forward:", loc.shape, conf.shape)
assert total == 8732 and loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
# box p of source 0, cell (0, 0): the first 4 rows of loc are channel groups 0..3, 4..7, ...
assert np.allclose(loc[0, :4].ravel(), model.loc[0].forward(sources[0])[0, :16, 0, 0], atol=1e-5)
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
    ax.set_xticks(np.arange(-0.5, 13, 1), minor=True), ax.set_yticks(np.arange(-0.5, 13, 1), minor=True)
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
      f"{norm_after.min():.3f} .. {norm_after.max():.3f};  conv7: {norm_conv7.min():.2f} .. {norm_conv7.max():.2f}")
assert np.allclose(norm_after[norm_before > 0], 20.0, rtol=1e-4)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
for ax, m, t in zip(axes, (norm_before, norm_after, norm_conv7), ("conv4_3 (random init)", "L2Norm(conv4_3)", "conv7")):
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

1. Compute the shapes of SSD512 (`minissd.config.ssd512`) with `minissd.model.source_sizes`,
   without building the network. Why does it need a fifth extra block?
2. Without ceil mode in pool3, what would the source sizes be? Set the base list's `"C"` to
   `"M"` in a copy of the config and read the error `SSD(...)` raises.
3. How many multiply-adds does one SSD300 forward pass take? Which layer costs the most?
4. Why can conv10_2 and conv11_2 use padding 0 while conv8_2 and conv9_2 use padding 1?
"""),
]
