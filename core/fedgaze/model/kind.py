"""Which reward model a run trains, named once for settings, devices and the server (light)."""

from __future__ import annotations

from typing import Literal, get_args

ModelKind = Literal["behaviour", "text"]
"""``behaviour``: the pairwise behaviour model over gaze, mouse and text features (it needs the
person's traces to score). ``text``: the text reward model ``r(prompt, response)`` over frozen
text embeddings (it scores any response)."""
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)

TextLabels = Literal["explicit", "implicit", "both"]
"""What the text reward model learns from on a device: the person's explicit choices only; the
behaviour model's inference only (a soft target); or the explicit choice where given, else the
inference."""
TEXT_LABELS: tuple[str, ...] = get_args(TextLabels)
