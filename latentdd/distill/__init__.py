"""Distillers: `Latents` -> `SyntheticLatents` (IPC latents per class).

Importing this package registers every distiller in `DISTILLERS`, in this order:
kmeans, kmeans-online (quantize.py), random, herding, kcenter (coreset.py), bacon, idm
(bacon.py), dm (dm.py), dc, dsa (dc.py), forgetting (forgetting.py), rded (rded.py), boundary
(boundary.py), mtt (mtt.py). The matching methods (bacon, idm, dm, dc, dsa, mtt) run on the engine
in the package matching/.

    from latentdd.distill import make_distiller
    synthetic = make_distiller("kmeans", weights_mode="sqrt").distill(latents, ipc=10, seed=0)
"""


from latentdd.distill.base import (
    DISTILLERS,
    DistillContext,
    Distiller,
    coerce_params,
    distiller_params,
    make_distiller,
    register_distiller,
)

# Distiller modules register themselves on import; the order here is the order of DISTILLERS.
from latentdd.distill import quantize as _quantize  # noqa: E402,F401  kmeans, kmeans-online
from latentdd.distill import coreset as _coreset  # noqa: E402,F401  random, herding, kcenter
from latentdd.distill import bacon as _bacon  # noqa: E402,F401  bacon, idm
from latentdd.distill import dm as _dm  # noqa: E402,F401  dm
from latentdd.distill import dc as _dc  # noqa: E402,F401  dc, dsa
from latentdd.distill import forgetting as _forgetting  # noqa: E402,F401  forgetting
from latentdd.distill import rded as _rded  # noqa: E402,F401  rded
from latentdd.distill import boundary as _boundary  # noqa: E402,F401  boundary
from latentdd.distill import mtt as _mtt  # noqa: E402,F401  mtt
from latentdd.distill import disagreement as _disagreement  # noqa: E402,F401  disagreement

from latentdd.distill.coreset import (  # noqa: E402
    HerdingDistiller,
    KCenterDistiller,
    RandomDistiller,
    herding_order,
    kcenter_order,
)
from latentdd.distill.quantize import (  # noqa: E402
    KMeansDistiller,
    OnlineKMeansDistiller,
    nearest_centroid,
    quantization_error,
    sqrt_weights,
    voronoi_masses,
    weighted_w2,
)

__all__ = [
    "DISTILLERS",
    "DistillContext",
    "Distiller",
    "HerdingDistiller",
    "KCenterDistiller",
    "KMeansDistiller",
    "OnlineKMeansDistiller",
    "RandomDistiller",
    "coerce_params",
    "distiller_params",
    "herding_order",
    "kcenter_order",
    "make_distiller",
    "nearest_centroid",
    "quantization_error",
    "register_distiller",
    "sqrt_weights",
    "voronoi_masses",
    "weighted_w2",
]

import sys as _sys  # noqa: E402

from latentdd import _StageModule  # noqa: E402

_sys.modules[__name__].__class__ = _StageModule  # latentdd.distill(...) calls latentdd.api.distill
