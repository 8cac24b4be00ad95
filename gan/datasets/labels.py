"""Cityscapes label maps -> the 19 evaluation classes (train ids) + ignore (255).

Colour label maps in the pix2pix archive are JPEG-compressed, so their
colours are noisy: each pixel takes the class of the nearest colour of the
full Cityscapes palette (the 19 evaluation classes and the void classes, so
that e.g. a noisy 'parking' pixel does not become 'sidewalk'); void colours
map to ignore. The official `*_gtFine_labelIds.png` files map exactly.
Colours and ids are those of cityscapesScripts' labels.py.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255

# (name, label id, train id, RGB) for the 19 evaluation classes.
TRAIN_CLASSES = [
    ("road", 7, 0, (128, 64, 128)), ("sidewalk", 8, 1, (244, 35, 232)), ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)), ("fence", 13, 4, (190, 153, 153)), ("pole", 17, 5, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)), ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)), ("terrain", 22, 9, (152, 251, 152)), ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)), ("rider", 25, 12, (255, 0, 0)), ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)), ("bus", 28, 15, (0, 60, 100)), ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)), ("bicycle", 33, 18, (119, 11, 32)),
]
# Void colours (ignored in evaluation) that appear in gtFine colour maps.
VOID_COLOURS = [(0, 0, 0), (111, 74, 0), (81, 0, 81), (250, 170, 160), (230, 150, 140), (180, 165, 180),
                (150, 100, 100), (150, 120, 90), (0, 0, 90), (0, 0, 110), (0, 74, 111)]
CLASS_NAMES = [c[0] for c in TRAIN_CLASSES]
NUM_CLASSES = len(TRAIN_CLASSES)

_PALETTE = np.array([c[3] for c in TRAIN_CLASSES] + VOID_COLOURS, np.int32)
_PALETTE_TRAIN_ID = np.array([c[2] for c in TRAIN_CLASSES] + [IGNORE] * len(VOID_COLOURS), np.uint8)
_LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE, np.uint8)
for _name, _label_id, _train_id, _ in TRAIN_CLASSES:
    _LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id


def colours_to_train_ids(label: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., H, W, 3] colour label map -> uint8 [..., H, W] train ids (nearest palette colour)."""
    flat = label.reshape(-1, 3).astype(np.int32)
    # Squared distances to every palette colour, chunked to bound memory on large maps.
    out = np.empty(len(flat), np.uint8)
    for start in range(0, len(flat), 1 << 18):
        chunk = flat[start:start + (1 << 18)]
        d = ((chunk[:, None, :] - _PALETTE[None]) ** 2).sum(-1)
        out[start:start + len(chunk)] = _PALETTE_TRAIN_ID[d.argmin(1)]
    return out.reshape(label.shape[:-1])


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Official `*_gtFine_labelIds.png` values -> train ids (exact)."""
    return _LABEL_ID_TO_TRAIN_ID[label_ids]


def train_ids_to_colours(train_ids: np.ndarray) -> np.ndarray:
    palette = np.zeros((256, 3), np.uint8)
    for _, _, train_id, colour in TRAIN_CLASSES:
        palette[train_id] = colour
    return palette[train_ids]
