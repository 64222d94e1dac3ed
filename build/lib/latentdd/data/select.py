"""Seeded choices of samples per class: random IPC selection and fixed train/test splits."""

from __future__ import annotations

import numpy as np
import torch

from latentdd.errors import DataError


def _class_label(k: int, class_names: list[str] | None) -> str:
    return f"class {class_names[k]!r} (index {k})" if class_names is not None else f"class {k}"


def random_per_class(
    labels: torch.Tensor,
    ipc: int,
    num_classes: int,
    generator: torch.Generator,
    class_names: list[str] | None = None,
) -> torch.Tensor:
    """`ipc` distinct random indices of each class -> (num_classes * ipc,) int64.

    Grouped by class in class order (entries [k*ipc, (k+1)*ipc) are class k); within a class,
    in the drawn order. The same labels, ipc and generator state give the same indices.
    Raises DataError if ipc < 1, a class has no samples, or a class has fewer than ipc.
    """
    labels = torch.as_tensor(labels).long()
    if not isinstance(ipc, int) or ipc < 1:
        raise DataError(f"IPC must be a positive integer; got {ipc!r}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}); got values in [{labels.min()}, {labels.max()}]")
    counts = torch.bincount(labels, minlength=num_classes)
    # Check every class before drawing, so the error names the first offending class.
    for k in range(num_classes):
        if counts[k] == 0:
            raise DataError(f"{_class_label(k, class_names)} has no images")
        if counts[k] < ipc:
            raise DataError(
                f"IPC {ipc} is larger than {_class_label(k, class_names)}, which has {int(counts[k])} images; lower --ipc"
            )
    # One stable sort instead of a mask per class: O(N log N) even with 1000 classes.
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    chosen = []
    for k in range(num_classes):
        members = order[starts[k] : starts[k] + counts[k]]
        chosen.append(members[torch.randperm(int(counts[k]), generator=generator)[:ipc]])
    return torch.cat(chosen)


def stratified_split(labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed split for datasets that ship without one -> (train indices, test indices).

    For each class k = 0, 1, ... in turn, its indices (in dataset order) are permuted with
    `numpy.random.default_rng(seed).permutation` (one generator for all classes, used in
    class order); the first round(test_fraction * n_k) (halves round up) go to test, the
    rest to train. Both index arrays are returned sorted, so each split keeps dataset order.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        perm = members[rng.permutation(members.size)]
        n_test = int(members.size * test_fraction + 0.5)
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    if not train:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)
