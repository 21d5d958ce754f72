"""The README's main job: the demo runs end to end and personalization really helps."""

import json

from updatable_coreml.demo import run
from updatable_coreml.validator import is_valid, validate


def test_demo_end_to_end(tmp_path, capsys):
    result = run(tmp_path, seed=0, shots=5, epochs=10, base_epochs=10)
    out = capsys.readouterr().out
    assert "network head, after personalization" in out and "k-NN, after personalization" in out
    for name in (
        "DigitsClassifier.mlmodel",
        "Personalized.mlmodel",
        "DigitsKNN.mlmodel",
        "loss.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    assert is_valid(validate(tmp_path / "DigitsClassifier.mlmodel"))
    assert is_valid(validate(tmp_path / "Personalized.mlmodel"))
    rows = {row["model"]: row for row in result["accuracy"]}
    shipped = rows["network head, as shipped"]
    personalized = rows["network head, after personalization"]
    knn = rows["k-NN, after personalization"]
    assert shipped["new 7-9"] == 0.0 and shipped["known 0-6"] > 0.9
    assert personalized["new 7-9"] > 0.5 and personalized["known 0-6"] > 0.8
    assert knn["new 7-9"] > 0.5 and knn["known 0-6"] > 0.8
    assert len(result["epochs"]) == 10
    json.dumps(result)
