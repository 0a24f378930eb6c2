"""Names every part agrees on: the baseline policy, and the columns that say which runs are compared."""

# The policy every other is compared with, paired by seed.
BASELINE = "none"
# The runs compared with one baseline: the same dataset, model and other settings.
BLOCK = ["dataset", "model", "setting"]
# One row of the report: a policy within its block.
KEYS = [*BLOCK, "augmentation"]
