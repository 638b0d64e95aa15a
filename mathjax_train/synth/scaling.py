"""Scaling fit: accuracy = a + b * ln(data size) across evaluation reports (the log-linear law
reported in the RFT paper, "Scaling Relationship on Learning Mathematical Reasoning with LLMs").

Each point is an evaluation report (JSON with at least `accuracy`, or another metric named by a
dotted path) and a training-set size: from a `:SIZE` suffix on the argument, else the report's
`train_examples` field. The fit is ordinary least squares in (ln size, metric), with R^2.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
from etils import epath

from mathjax_train.errors import InputError

SIZE_FIELD = "train_examples"
_SIZE_SUFFIX = re.compile(r"^(?P<path>.+):(?P<size>\d+(?:\.\d+)?(?:[eE]\+?\d+)?)$")


@dataclass(frozen=True)
class Point:
    source: str
    size: float
    value: float


@dataclass(frozen=True)
class Fit:
    intercept: float  # a
    slope: float  # b: gain per e-fold of data (b * ln 2 per doubling)
    r2: float
    points: tuple[Point, ...]
    metric: str

    def predict(self, size: float) -> float:
        return self.intercept + self.slope * math.log(size)

    def size_for(self, value: float) -> float:
        """The data size at which the fitted law reaches `value`."""
        if self.slope == 0:
            raise InputError("the fitted slope is 0: no data size changes the metric")
        return math.exp((value - self.intercept) / self.slope)

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "law": f"{self.metric} = a + b * ln(size)",
            "intercept": self.intercept,
            "slope": self.slope,
            "gain_per_doubling": self.slope * math.log(2),
            "r2": self.r2,
            "points": [
                {"report": p.source, "size": p.size, self.metric: p.value, "fitted": self.predict(p.size)}
                for p in self.points
            ],
        }


def _lookup(report: dict, dotted: str, where: str):
    node = report
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise InputError(f"{where}: field {dotted!r} is missing")
        node = node[part]
    return node


def _number(value, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: field {name!r} must be a finite number, got {value!r:.60}")
    return float(value)


def read_point(arg: str, metric: str = "accuracy") -> Point:
    """One `REPORT.json[:SIZE]` argument -> Point (errors name the file and the field)."""
    m = _SIZE_SUFFIX.match(arg)
    path, size = (m["path"], float(m["size"])) if m and not epath.Path(arg).exists() else (arg, None)
    p = epath.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: report not found")
    try:
        report = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(report, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(report).__name__}")
    value = _number(_lookup(report, metric, path), path, metric)
    if size is None:
        if SIZE_FIELD not in report:
            raise InputError(
                f"{path}: no data size: add ':SIZE' to the argument or a {SIZE_FIELD!r} field to the report"
            )
        size = _number(report[SIZE_FIELD], path, SIZE_FIELD)
    if size <= 0:
        raise InputError(f"{arg}: the data size must be positive, got {size:g}")
    return Point(path, size, value)


def fit_log_linear(points: list[Point], metric: str = "accuracy") -> Fit:
    """Least squares fit of value = a + b ln(size); needs two distinct sizes."""
    if len({p.size for p in points}) < 2:
        raise InputError(
            f"a fit needs reports at two or more distinct data sizes, got {len(points)} report(s) "
            f"with sizes {sorted({p.size for p in points})}"
        )
    x = np.log(np.array([p.size for p in points]))
    y = np.array([p.value for p in points])
    design = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = float(np.sum((y - (a + b * x)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return Fit(float(a), float(b), r2, tuple(sorted(points, key=lambda p: p.size)), metric)


def plot_fit(fit: Fit, path, title: str | None = None) -> None:
    """Points and the fitted line against data size on a log axis, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.array([p.size for p in fit.points])
    grid = np.geomspace(sizes.min(), sizes.max(), 100)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter(sizes, [p.value for p in fit.points], color="tab:blue", zorder=3, label="reports")
    ax.plot(
        grid,
        fit.intercept + fit.slope * np.log(grid),
        color="tab:red",
        label=f"{fit.intercept:.4g} + {fit.slope:.4g} ln(size)  (R² = {fit.r2:.3f})",
    )
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(fit.metric)
    ax.set_title(title or f"{fit.metric} vs data size (log-linear fit)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
