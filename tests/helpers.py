"""Helpers shared by several test modules (fixtures live in conftest.py)."""
import socket

import numpy as np


def textured(channels: int, size: int = 32) -> np.ndarray:
    """An asymmetric, textured uint8 image, so flips, small shifts, warps, colour and contrast changes all show."""
    y, x = np.mgrid[0:size, 0:size]
    base = 40 + 3 * x + 2 * y + 25 * ((x // 4 + y // 3) % 2)
    base[2:7, 3:12] = 250  # an off-centre bright block breaks every symmetry
    planes = [base, (base * 0.6 + 60 * (y > size // 2)), 220 - base * 0.7][:channels]
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (once the probe socket closes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
