"""Bad input gets one clear error naming the file/field/line, and a non-zero exit code."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hf_fixtures import make_hf_model
from mathjax_train.cli import main
from mathjax_train.convert.safetensors_io import write_safetensors


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad") / "hf"
    make_hf_model(d, "llama", 2)
    return d


def run(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def edit_config(hf_dir, tmp_path, **changes):
    import shutil

    d = tmp_path / "edited"
    shutil.copytree(hf_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_missing_config_field(hf_dir, tmp_path, capsys):
    d = edit_config(hf_dir, tmp_path, num_hidden_layers=None)
    code, err = run(["import-hf", str(d), str(tmp_path / "c")], capsys)
    assert code != 0 and "config.json" in err and "'num_hidden_layers' is missing" in err


def test_unsupported_config_field(hf_dir, tmp_path, capsys):
    d = edit_config(hf_dir, tmp_path, hidden_act="gelu")
    code, err = run(["import-hf", str(d), str(tmp_path / "c")], capsys)
    assert code != 0 and "config.json" in err and "hidden_act='gelu'" in err
    d2 = edit_config(hf_dir, tmp_path / "b", model_type="gpt2")
    code, err = run(["import-hf", str(d2), str(tmp_path / "c2")], capsys)
    assert code != 0 and "model_type='gpt2'" in err and "llama, mistral, qwen2" in err


def test_tensor_with_wrong_shape(hf_dir, tmp_path, capsys):
    d = edit_config(hf_dir, tmp_path)
    name = "model.layers.1.mlp.up_proj.weight"
    from mathjax_train.convert.safetensors_io import iter_tensors
    from etils import epath

    tensors = dict(iter_tensors(epath.Path(d / "model.safetensors")))
    tensors[name] = np.zeros((7, 3), np.float32)
    write_safetensors(
        epath.Path(d / "model.safetensors"), [(k, v.shape, v.dtype) for k, v in tensors.items()], lambda k: tensors[k]
    )
    code, err = run(["import-hf", str(d), str(tmp_path / "c")], capsys)
    assert code != 0 and "model.safetensors" in err and name in err and "(7, 3)" in err


def test_missing_tokenizer(hf_dir, tmp_path, capsys):
    d = edit_config(hf_dir, tmp_path)
    (d / "tokenizer.json").unlink()
    code, err = run(["import-hf", str(d), str(tmp_path / "c")], capsys)
    assert code != 0 and str(d) in err and "tokenizer.json" in err and "tokenizer.model" in err
    assert "--tokenizer DIR" in err


def test_prompt_row_without_prompt_and_malformed_line(hf_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["import-hf", str(hf_dir), str(ckpt), "--dtype", "float32"]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1="}\n{"question": "2+2="}\n')
    code, err = run(
        ["generate", "--checkpoint", str(ckpt), "--prompts", str(bad), "--output", str(tmp_path / "o")], capsys
    )
    assert code != 0 and f"{bad}:2" in err and "'prompt'" in err
    bad.write_text('{"prompt": "1+1="}\n{"prompt": "2+2=}\n')
    code, err = run(
        ["generate", "--checkpoint", str(ckpt), "--prompts", str(bad), "--output", str(tmp_path / "o")], capsys
    )
    assert code != 0 and f"{bad}:2" in err


def test_not_a_checkpoint(tmp_path, capsys):
    code, err = run(["export-hf", str(tmp_path), str(tmp_path / "out")], capsys)
    assert code != 0 and "model_config.json" in err


def test_console_script_exit_code(tmp_path):
    """The installed entry point really exits non-zero with the message on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "mathjax_train.cli", "import-hf", str(tmp_path / "nope"), str(tmp_path / "c")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "config.json" in proc.stderr and "not found" in proc.stderr


def test_corrupt_safetensors_is_one_line_naming_the_file(hf_dir, tmp_path, capsys):
    d = edit_config(hf_dir, tmp_path)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:8] + b"{not json" + b" " * 64)
    code, err = run(["import-hf", str(d), str(tmp_path / "c")], capsys)
    assert code == 2 and str(weights) in err and "corrupt safetensors header" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_internal_error_keeps_its_traceback(monkeypatch, tmp_path):
    """Only input errors (InputError and its family) become one-line messages: a ValueError raised by a bug
    propagates with its traceback, so it cannot pass for a user mistake."""
    import mathjax_train.convert.import_hf as import_hf

    def broken(*_a, **_k):
        raise ValueError("an internal invariant failed")

    monkeypatch.setattr(import_hf, "import_hf", broken)
    with pytest.raises(ValueError, match="an internal invariant failed"):
        main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "c")])
