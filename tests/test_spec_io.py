import os

import pytest

from models import mlp_regressor
from updatable_coreml.errors import ModelFileError
from updatable_coreml.spec_io import atomic_write_bytes, load_spec, save_spec


def test_save_is_deterministic_and_round_trips(tmp_path):
    spec = mlp_regressor()
    a, b = tmp_path / "a.mlmodel", tmp_path / "b.mlmodel"
    save_spec(spec, a)
    save_spec(load_spec(a), b)
    assert a.read_bytes() == b.read_bytes()


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "m.mlmodel"
    target.write_bytes(b"previous")

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ModelFileError, match="No space left"):
        atomic_write_bytes(b"new content", target)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.mlmodel"]


def test_output_path_that_is_a_directory(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        atomic_write_bytes(b"x", tmp_path)
