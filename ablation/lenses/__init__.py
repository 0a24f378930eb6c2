"""What a run measures beyond the gap, each measure beside its comparison: per class, corruptions, affinity."""
