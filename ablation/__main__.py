"""`python -m ablation`: the `ablation` command (ablation/cli/train.py)."""
from ablation.cli.train import main

if __name__ == "__main__":
    main()
