"""Published test accuracies (%, ConvNet-3) to compare against (PROTOCOLS.md section 2).

Keyed by dataset, method and IPC; values are (mean, std), std None where unpublished.
Each figure comes with the protocol it was measured under (`PROTOCOL`), which a table
must print beside it: the random-real, coreset and DC figures train 300 epochs without
augmentation (DC's code adds crop/scale/rotate for MNIST), DSA and DM 1000 epochs with DSA
augmentation, and IDM and BACON also train on 4 factorized sub-images per stored image
("--aug"), so their "IPC 10" trains on 40 images.
"""

from __future__ import annotations

from typing import NamedTuple

DC_PROTOCOL = "DC protocol: 300 ep, no aug"
DSA_PROTOCOL = "DSA protocol: 1000 ep, DSA aug"
PROTOCOL: dict[str, str] = {
    "random": DC_PROTOCOL, "herding": DC_PROTOCOL, "kcenter": DC_PROTOCOL, "forgetting": DC_PROTOCOL,
    "dc": DC_PROTOCOL, "dsa": DSA_PROTOCOL, "dm": DSA_PROTOCOL,
    "idm": "IDM/BACON protocol: 1000 ep, DSA aug, factorized --aug (4 sub-images per image)",
    "bacon": "IDM/BACON protocol: 1000 ep, DSA aug, factorized --aug (4 sub-images per image)",
    "full": "whole train set",
}
# (dataset, method) whose protocol differs from the method's usual one.
PROTOCOL_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("mnist", "dc"): "DC protocol: 300 ep, crop/scale/rotate aug",  # DC's get_daparam augments MNIST
}


class Published(NamedTuple):
    mean: float
    std: float | None
    protocol: str


PUBLISHED: dict[str, dict[str, dict[int, tuple[float, float | None]]]] = {
    "fashion_mnist": {
        "random": {1: (51.4, 3.8), 10: (73.8, 0.7), 50: (82.5, 0.7)},
        "herding": {1: (67.0, 1.9), 10: (71.1, 0.7), 50: (71.9, 0.8)},
        "kcenter": {1: (66.9, 1.8), 10: (54.7, 1.5), 50: (68.3, 0.8)},
        "forgetting": {1: (42.0, 5.5), 10: (53.9, 2.0), 50: (55.0, 1.1)},
        "dc": {1: (70.5, 0.6), 10: (82.3, 0.4), 50: (83.6, 0.4)},
        "dsa": {1: (70.6, 0.6), 10: (84.6, 0.3), 50: (88.7, 0.2)},
        "idm": {1: (78.23, None), 10: (82.53, None), 50: (84.03, None)},
        "bacon": {1: (78.48, None), 10: (84.23, None), 50: (85.52, None)},
        "full": {0: (93.5, 0.1)},
    },
    "mnist": {
        "random": {1: (64.9, None), 10: (95.1, None), 50: (97.9, None)},
        "dc": {1: (91.7, None), 10: (97.4, None), 50: (98.8, None)},
        "dsa": {1: (88.7, None), 10: (97.8, None), 50: (99.2, None)},
        "idm": {1: (93.82, None), 10: (96.26, None), 50: (97.01, None)},
        "bacon": {1: (94.15, None), 10: (97.3, None), 50: (98.01, None)},
        "full": {0: (99.6, None)},
    },
    "cifar10": {
        "random": {1: (14.4, None), 10: (26.0, None), 50: (43.4, None)},
        "dc": {1: (28.3, None), 10: (44.9, None), 50: (53.9, None)},
        "dsa": {1: (28.8, None), 10: (52.1, None), 50: (60.6, None)},
        "dm": {1: (26.0, None), 10: (48.9, None), 50: (63.0, None)},
        "idm": {1: (45.60, None), 10: (58.6, None), 50: (67.5, None)},
        "bacon": {1: (45.62, None), 10: (62.06, None), 50: (70.06, None)},
        "full": {0: (84.8, None)},
    },
}


def published(dataset: str, method: str, ipc: int) -> Published | None:
    """(mean, std, protocol) of a published figure, or None when there is none."""
    figure = PUBLISHED.get(dataset, {}).get(method, {}).get(ipc)
    if figure is None:
        return None
    return Published(*figure, PROTOCOL_EXCEPTIONS.get((dataset, method), PROTOCOL[method]))
