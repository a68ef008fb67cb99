"""Image grids for previews (train_batch.jpg and the like), drawn with OpenCV only: building a
32-tile matplotlib figure took seconds at the start of every run, this takes milliseconds."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def tile_images(tiles: Sequence[np.ndarray], cols: int, gap: int = 4) -> np.ndarray:
    """Equal-sized (H, W, 3) uint8 tiles in rows of `cols`, `gap` black pixels between them."""
    if not tiles:
        raise ValueError("tile_images: no tiles")
    cols = max(1, min(int(cols), len(tiles)))
    rows = -(-len(tiles) // cols)
    h, w = tiles[0].shape[:2]
    grid = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return grid
