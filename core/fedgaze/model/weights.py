"""A model's weights as plain arrays: the form in which models travel, aggregate and are stored.

Torch-free, so the server, the aggregation rules and the model store handle weights without
importing a training stack.
"""

from __future__ import annotations

import numpy as np

ModelState = dict[str, np.ndarray]
"""Parameter name (as in the torch ``state_dict``, e.g. ``net.0.weight``) -> float32 array."""
