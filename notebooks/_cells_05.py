"""Cells of 05_loss_and_hard_negative_mining.ipynb (written by notebooks/_build.py)."""

CELLS = [
("md", r"""
# 05 · MultiBox loss and hard negative mining

$$L = \frac{1}{N}\left(L_{conf} + \alpha L_{loc}\right), \qquad \alpha = 1,\quad
  N = \text{number of positives}$$

$L_{loc}$ is a smooth L1 loss on the offsets of the positive boxes; $L_{conf}$ is softmax
cross-entropy over the positives **and the hardest negatives**, three per positive.
(`minissd.loss.multibox_loss_forward` / `multibox_loss_backward`, the mining in
`minissd.kernels.hard_negative_mask`.)
"""),
("code", r"""
import os
import subprocess
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from minissd import backend, viz
from minissd.boxes import center_to_corner
from minissd.config import tiny
from minissd.data.augment import preprocess, resize
from minissd.data.synthetic import generate
from minissd.data.voc import VOCDataset
from minissd.gradcheck import check_gradients
from minissd.kernels import hard_negative_mask
from minissd.kernels.hard_negative_kernel import hard_negative_mask_reference
from minissd.loss import multibox_loss_backward, multibox_loss_forward
from minissd.matching import match_batch
from minissd.model import SSD
from minissd.priors import default_boxes

rng = np.random.default_rng(0)
"""),
("md", r"""
## Smooth L1

$$\text{smooth}_{L1}(d) = \begin{cases} 0.5\, d^2 & |d| < 1 \\
  |d| - 0.5 & \text{otherwise}\end{cases}
\qquad \frac{\partial}{\partial d} = \text{clip}(d, -1, 1)$$

Quadratic near zero (smooth gradients for small errors), linear far away (a badly placed box
does not dominate the batch the way an L2 loss would let it).
"""),
("code", r"""
d = np.linspace(-3, 3, 301)
zeros = np.zeros((1, d.size, 4))
loc = zeros.copy(); loc[0, :, 0] = d
conf = np.zeros((1, d.size, 2)); conf_t = np.ones((1, d.size), np.int64)  # all positive
_, parts, cache = multibox_loss_forward(loc, conf, zeros, conf_t)
dloc, _ = multibox_loss_backward(cache)
per_box = float(parts["loc"]) * d.size          # L_loc / N with N = d.size: undo the mean
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].plot(d, np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5), label="smooth L1")
axes[0].plot(d, 0.5 * d ** 2, "--", label="L2 / 2"), axes[0].plot(d, np.abs(d), ":", label="L1")
axes[0].set_ylim(0, 3), axes[0].legend(), axes[0].set_title("loss of one offset")
axes[1].plot(d, dloc[0, :, 0] * d.size)
axes[1].set_title("its gradient from multibox_loss_backward")
plt.show()
expected = np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5).sum()
assert np.isclose(per_box, expected)
assert np.allclose(dloc[0, :, 0] * d.size, np.clip(d, -1, 1))
"""),
("md", r"""
## The confidence loss and a known answer

$$L_{conf} = -\sum_{p \in Pos} \log \hat c_p^{\,y_p} - \sum_{p \in Neg} \log \hat c_p^{\,0},
\qquad \hat c_p = \text{softmax}(\text{conf}_p)$$

With all logits zero, every box costs $\log C$. With $N$ positives and at least $3N$
negatives, $3N$ negatives are mined, so $L_{conf}/N = 4 \log C$: the loss of an untrained
network starts near there.
"""),
("code", r"""
N, P, C = 2, 200, 7
conf_t = np.zeros((N, P), np.int64)
conf_t[0, :5] = 3; conf_t[1, 10:13] = 1                     # 8 positives
_, parts, _ = multibox_loss_forward(np.zeros((N, P, 4)), np.zeros((N, P, C)),
                                    np.zeros((N, P, 4)), conf_t)
print(f"L_conf / N = {float(parts['conf']):.4f},  4 log C = {4 * np.log(C):.4f}")
assert np.isclose(float(parts["conf"]), 4 * np.log(C))
"""),
("md", r"""
## Hard negatives on an image

Almost all of the 8732 (here 1524, the tiny config) boxes are background. Using them all would
drown the positives, so per image only the background boxes with the **largest background
cross-entropy** $-\log \hat c_p^{\,0}$ are kept, 3 per positive. Below: an untrained tiny SSD on a
synthetic image. Green dashed: positive default boxes; red: the mined hard negatives (the boxes
where the network is most wrong about "background").
"""),
("code", r"""
cfg = tiny()
model = SSD(cfg)
priors = default_boxes(cfg)
root = generate(tempfile.mkdtemp(prefix="minissd-nb05-"), num_train=8, num_val=0, image_size=128,
                seed=5)
ds = VOCDataset(root, splits=("train",))
sample = max((ds[n] for n in range(len(ds))), key=lambda s: len(s.boxes))   # the busiest image
image = resize(sample.image, cfg.image_size)
x = preprocess(image[None].astype(np.float32), cfg.preprocess)      # (1, 3, 128, 128)
loc, conf = model.forward(x)
loc_t, conf_t = match_batch([sample.boxes], [sample.labels], priors)
loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
num_pos, num_neg = int(cache.positive.sum()), int(cache.negative.sum())
print(f"loss {float(loss):.3f} (loc {float(parts['loc']):.3f}, conf {float(parts['conf']):.3f}); "
      f"{num_pos} positives, {num_neg} hard negatives of {priors.shape[0] - num_pos} "
      "background boxes")
assert num_neg == min(3 * num_pos, priors.shape[0] - num_pos)

fig, ax = plt.subplots(figsize=(6, 6))
viz.draw_boxes(image, center_to_corner(priors[cache.negative[0]]), ax=ax, color="tab:red",
               linewidth=1)
viz.draw_boxes(None, center_to_corner(priors[cache.positive[0]]) * cfg.image_size, ax=ax,
               color="lime", normalized=False, linewidth=1.5, linestyle="--")
viz.draw_boxes(None, sample.boxes * cfg.image_size, ax=ax, color="white", normalized=False,
               linewidth=2.5)
ax.set_title(f"{num_pos} positives (green), {num_neg} hard negatives (red)")
plt.show()
"""),
("md", r"""
## The gradient, checked

With the mined set held fixed (the mask is a piecewise-constant choice, not differentiated), the
gradients are

$$\frac{\partial L}{\partial \text{loc}_p}
  = \frac{[p \in Pos]}{N}\,\text{clip}(\text{loc}_p - t_p, -1, 1), \qquad
\frac{\partial L}{\partial \text{conf}_p}
  = \frac{[p \in Pos \cup Neg]}{N}\,(\hat c_p - \text{onehot}(y_p)).$$
"""),
("code", r"""
N, P, C = 2, 40, 4
loc = rng.standard_normal((N, P, 4)) * 1.5
conf = rng.standard_normal((N, P, C))
loc_t = rng.standard_normal((N, P, 4))
conf_t = np.where(rng.random((N, P)) < 0.15, rng.integers(1, C, (N, P)), 0)
loss, parts, cache = multibox_loss_forward(loc, conf, loc_t, conf_t)
dloc, dconf = multibox_loss_backward(cache)
negatives = cache.negative.copy()                 # hold the mined set fixed
errors = check_gradients(
    lambda: multibox_loss_forward(loc, conf, loc_t, conf_t, negatives=negatives)[0],
    {"loc": loc, "conf": conf}, {"loc": dloc, "conf": dconf})
print("rel errors", {k: f"{v:.1e}" for k, v in errors.items()})
assert max(errors.values()) < 1e-6
"""),
("md", r"""
## The double argsort, unpacked

The classic implementation (ssd.pytorch) picks the hard negatives with two sorts:

```python
loss_c[pos] = 0                       # positives never mined
_, loss_idx = loss_c.sort(1, descending=True)
_, idx_rank = loss_idx.sort(1)        # the cryptic line
neg = idx_rank < num_neg
```

Step by step on one image of 8 boxes:
"""),
("code", r"""
loss_c = np.array([0.3, 2.0, 0.1, 1.5, 0.7, 0.9, 3.0, 0.2])
positive = np.array([False, False, False, False, False, False, True, False])

# 1. positives must never be chosen: send them to the end of the order
sortable = np.where(positive, -np.inf, loss_c)
# 2. order: box indices from the hardest negative to the easiest
order = np.argsort(-sortable, kind="stable")
# 3. rank: where each box landed in that order (argsort of a permutation inverts it)
rank = np.argsort(order, kind="stable")
# 4. how many to take: 3 per positive, at most the number of negatives
num_neg = min(3 * positive.sum(), (~positive).sum())
# 5. the hard negatives are the boxes ranked before num_neg
mask = rank < num_neg

print("loss    ", loss_c)
print("order   ", order, " (hardest first; box 6 is positive, last)")
print("rank    ", rank)
print("num_neg ", num_neg)
print("mask    ", mask.astype(int))
assert np.array_equal(mask, hard_negative_mask(loss_c[None], positive[None], 3)[0])
assert np.array_equal(mask, hard_negative_mask_reference(loss_c[None], positive[None], 3)[0])
"""),
("md", r"""
The fast versions never sort: they only need the $k$-th largest negative loss. The CPU path
(numba) uses `np.partition` per image; the CUDA kernel (one block per image) finds the exact
$k$-th value with a radix select on order-preserving 32-bit keys, then takes ties in index order
with a block-wide prefix sum.

## CPU path vs CUDA kernel

Without a GPU, Numba's CUDA **simulator** runs the kernel body in Python threads. The flag
`NUMBA_ENABLE_CUDASIM=1` is read when numba is imported, so the kernel runs in a fresh process.
With a GPU (CuPy), the kernel runs for real on the device.
"""),
("code", r"""
losses = (rng.integers(0, 30, (3, 300)) / 7).astype(np.float32)   # many ties
positive = rng.random((3, 300)) < 0.05
positive[1] = False                                                # an image without positives
cpu = hard_negative_mask(losses, positive, 3)

if backend.cuda_available():
    import cupy
    gpu = cupy.asnumpy(hard_negative_mask(cupy.asarray(losses), cupy.asarray(positive), 3))
    where = "GPU"
else:
    folder = tempfile.mkdtemp(prefix="minissd-nb05-sim-")
    np.save(os.path.join(folder, "losses.npy"), losses)
    np.save(os.path.join(folder, "positive.npy"), positive)
    script = (
        "import os, sys, numpy as np\n"
        "from minissd.kernels.hard_negative_kernel import hard_negative_mask_cuda\n"
        "f = sys.argv[1]\n"
        "mask = hard_negative_mask_cuda(np.load(os.path.join(f, 'losses.npy')),\n"
        "                               np.load(os.path.join(f, 'positive.npy')), 3, threads=64)\n"
        "np.save(os.path.join(f, 'mask.npy'), mask)\n")
    run = subprocess.run([sys.executable, "-c", script, folder], capture_output=True, text=True,
                         env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), timeout=600)
    assert run.returncode == 0, run.stderr
    gpu = np.load(os.path.join(folder, "mask.npy"))
    where = "CUDA simulator"

print(f"negatives per image: CPU {cpu.sum(axis=1)}, {where} {gpu.sum(axis=1)}; "
      f"positives {positive.sum(axis=1)}")
assert np.array_equal(cpu, gpu)
assert np.array_equal(cpu, hard_negative_mask_reference(losses, positive, 3))
"""),
("md", r"""
## Exercises

1. Change `neg_pos_ratio` to 1 and to 10 in `multibox_loss_forward` for the image above. How
   do the loss and its parts change? Why might a larger ratio slow training down?
2. Ties: give every negative the same loss. Which boxes are mined? Is that a problem?
3. The mined set is held fixed in the gradient check. Perturb a loss value across the $k$-th
   largest one and watch the numerical gradient jump.
4. Why is the mining done per image and not over the whole batch? Try both on a batch where one
   image has many objects and another has one.
"""),
]
