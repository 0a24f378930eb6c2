"""ablation: which data augmentations reduce overfitting on your images, and by how much beyond seed noise."""
import os

# albumentations checks PyPI for updates at import unless told not to; offline machines would wait and warn.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
