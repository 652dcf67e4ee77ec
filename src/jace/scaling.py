"""Target scaling: map raw scores onto [0, 1] for a sigmoid head, and back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SCALER_FILE = "target_scaler.json"


@dataclass(frozen=True)
class TargetScaler:
    """Min-max scaler fitted on the training split only; ``transform`` clips into [0, 1].

    Values outside the training range (in validation or test data) are clipped, so BCE targets
    stay valid. The model's sigmoid output maps back with :meth:`inverse_transform`.

    Example:
        >>> s = TargetScaler.fit([0.0, 4.0])
        >>> s.transform([2.0, 5.0]).tolist(), s.inverse_transform([0.5]).tolist()
        ([0.5, 1.0], [2.0])
    """

    minimum: float
    maximum: float

    @classmethod
    def fit(cls, values: Sequence[float] | np.ndarray) -> "TargetScaler":
        array = np.asarray(values, dtype=float)
        if array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError("TargetScaler.fit needs at least one value, all finite.")
        low, high = float(array.min()), float(array.max())
        if high == low:
            raise ValueError(f"All training targets equal {low}; a regression target needs some spread.")
        return cls(low, high)

    def transform(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        scaled = (np.asarray(values, dtype=float) - self.minimum) / (self.maximum - self.minimum)
        return np.clip(scaled, 0.0, 1.0)

    def inverse_transform(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=float) * (self.maximum - self.minimum) + self.minimum

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SCALER_FILE
        path.write_text(json.dumps({"type": "minmax", **asdict(self)}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "TargetScaler | None":
        """Read ``target_scaler.json`` from a model folder; None when the folder has none."""
        path = Path(directory) / SCALER_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(float(data["minimum"]), float(data["maximum"]))
