# %% [markdown]
# # Max-of-4: train a model, certify it, and see the bound-vs-proof-length frontier
#
# This example mirrors `max_of_4.ipynb` cell by cell (the notebook is generated from this file
# by `scripts/build_example_notebook.py`, and a test runs this script). Run it with
# `python examples/max_of_4.py [--steps N] [--out DIR]`.

# %%
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows (a notebook shows the figure inline anyway)
import matplotlib.pyplot as plt

import compact_proofs as cp

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=cp.TrainingRecipe.steps)
parser.add_argument("--out", default="max-of-4-example")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Train a Max-of-4 model with the paper's recipe (seed 123)

# %%
cfg = cp.ModelConfig(d_vocab=64, n_ctx=4, d_model=32)
model, stats = cp.train(cfg, seed=123, recipe=cp.TrainingRecipe(steps=args.steps))
print(f"final training loss {stats.train_loss:.4f}, accuracy {stats.train_accuracy:.4f}")
cp.save_model(model, out / "model.safetensors")

# %% [markdown]
# ## Its exact accuracy over all 64^4 inputs (a proof in exact arithmetic)

# %%
exact = cp.exact_accuracy(model)
print(f"exact accuracy {exact.accuracy:.6f} ({exact.correct} of {exact.total})")

# %% [markdown]
# ## Certify it with a few strategies, from cubic to sub-cubic

# %%
proofs = cp.prove(model, "cubic,separable,separable-lite,group:Low-rank QK")
frame = proofs.frame()
frame["normalized_bound"] = frame["bound"] / exact.accuracy
print(frame[["strategy", "bound", "normalized_bound", "log2_flops", "arithmetic"]].head(8))
proofs.save(out / "certificates.json")

# %% [markdown]
# ## Every certificate re-checked: by verification alone, and by the independent checker

# %%
verified = cp.verify(model, out / "certificates.json")
checked = cp.check(out / "model.safetensors", out / "certificates.json")
assert [r.correct_count for r in verified] == list(frame["correct_count"])
print(f"{len(verified)} certificates verified, {len(checked)} re-checked independently")

# %% [markdown]
# ## The frontier: certified bound against proof length

# %%
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for group, rows in frame.groupby("group"):
    ax.scatter(rows["log2_flops"], rows["normalized_bound"], label=group, s=18)
ax.set_xlabel("proof length: log2 FLOPs of verification")
ax.set_ylabel("bound / exact accuracy")
ax.legend(fontsize=7, loc="lower right")
fig.savefig(out / "frontier.png", dpi=120)
print(f"figure written to {out / 'frontier.png'}")
