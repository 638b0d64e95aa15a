"""scaling-fit: reports generated from a known log-linear law give back its slope and intercept;
the plot is a real PNG; bad reports name the file and field."""

import json
import math

import numpy as np
import pytest

from mathjax_train.cli import main
from mathjax_train.synth.scaling import fit_log_linear, read_point

A, B = 0.12, 0.045
SIZES = [1000, 2000, 4000, 8000, 16000, 32000]


def write_reports(tmp_path, values, sizes=SIZES, with_field=True):
    """Half the reports carry `train_examples`, half get the size from a `:SIZE` argument suffix."""
    args = []
    for i, (size, value) in enumerate(zip(sizes, values)):
        path = tmp_path / f"eval_{i}.json"
        body = {"accuracy": value, "maj@k": {"4": value + 0.01}, "n": 500}
        if with_field and i % 2 == 0:
            body["train_examples"] = size
            args.append(str(path))
        else:
            args.append(f"{path}:{size}")
        path.write_text(json.dumps(body))
    return args


def test_exact_law_is_recovered_and_plotted(tmp_path, capsys):
    args = write_reports(tmp_path, [A + B * math.log(s) for s in SIZES])
    png = tmp_path / "plots" / "scaling.png"
    assert main(["scaling-fit", *args, "--plot", str(png), "--target", "0.6"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["intercept"] == pytest.approx(A, abs=1e-9) and out["slope"] == pytest.approx(B, abs=1e-9)
    assert out["r2"] == pytest.approx(1.0, abs=1e-12)
    assert out["gain_per_doubling"] == pytest.approx(B * math.log(2), abs=1e-9)
    assert [p["size"] for p in out["points"]] == SIZES
    assert out["size_for_target"]["size"] == pytest.approx(math.exp((0.6 - A) / B), rel=1e-6)

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    h, w = matplotlib.image.imread(str(png)).shape[:2]
    assert h > 200 and w > 300


def test_noisy_reports_match_numpy_polyfit(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [500 * 2**k for k in range(10)]
    values = [A + B * math.log(s) + rng.normal(0, 0.004) for s in sizes]
    fit = fit_log_linear([read_point(a) for a in write_reports(tmp_path, values, sizes)])
    slope, intercept = np.polyfit(np.log(sizes), values, 1)
    assert (fit.slope, fit.intercept) == (pytest.approx(slope, abs=1e-10), pytest.approx(intercept, abs=1e-10))
    assert abs(fit.slope - B) < 0.003 and 0.95 < fit.r2 < 1.0


def test_other_metrics_by_dotted_path(tmp_path):
    args = write_reports(tmp_path, [A + B * math.log(s) for s in SIZES])
    fit = fit_log_linear([read_point(a, "maj@k.4") for a in args], "maj@k.4")
    assert fit.intercept == pytest.approx(A + 0.01, abs=1e-9) and fit.metric == "maj@k.4"


def test_bad_reports_name_file_and_field(tmp_path, capsys):
    args = write_reports(tmp_path, [0.3, 0.4], sizes=[100, 200])
    assert main(["scaling-fit", args[0]]) == 2
    assert "two or more distinct data sizes" in capsys.readouterr().err

    no_size = tmp_path / "no_size.json"
    no_size.write_text(json.dumps({"accuracy": 0.5}))
    assert main(["scaling-fit", str(no_size), args[1]]) == 2
    assert f"{no_size}: no data size" in capsys.readouterr().err

    missing = tmp_path / "missing_metric.json"
    missing.write_text(json.dumps({"train_examples": 10, "acc": 0.5}))
    assert main(["scaling-fit", str(missing), args[1]]) == 2
    assert f"{missing}: field 'accuracy' is missing" in capsys.readouterr().err

    broken = tmp_path / "broken.json"
    broken.write_text('{"accuracy": 0.5,\n oops}')
    assert main(["scaling-fit", f"{broken}:10", args[1]]) == 2
    assert f"{broken}:2: not valid JSON" in capsys.readouterr().err

    null = tmp_path / "null.json"
    null.write_text(json.dumps({"accuracy": None, "train_examples": 5}))
    assert main(["scaling-fit", str(null), args[1]]) == 2
    assert "'accuracy' must be a finite number" in capsys.readouterr().err

    assert main(["scaling-fit", f"{args[1].rsplit(':', 1)[0]}:0", args[0]]) == 2
    assert "must be positive" in capsys.readouterr().err
