"""hydra/launcher=ray: a sweep's jobs as tasks on a Ray cluster (ablation/sweep/ray_cluster.py)."""
