"""The retraining notebook runs top to bottom in quick mode on the real data."""

from __future__ import annotations

import json

import pytest

from model import config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_notebook_quick_run(tmp_path):
    import hashlib

    import papermill

    from tests.conftest import real_data_dir

    real_data_dir()
    committed = config.MODEL_DIR / config.MODEL_H5_FILE
    before = hashlib.sha256(committed.read_bytes()).hexdigest() if committed.is_file() else None
    out_dir = tmp_path / "model"
    papermill.execute_notebook(
        str(config.PROJECT_ROOT / "notebooks" / "retrain.ipynb"),
        str(tmp_path / "executed.ipynb"),
        parameters={"QUICK": True, "OUT_DIR": str(out_dir), "WORK_DIR": str(tmp_path / "work")},
        cwd=str(config.PROJECT_ROOT),
        kernel_name="python3",
        progress_bar=False,
    )
    metadata = json.loads((out_dir / config.METADATA_FILE).read_text())
    assert metadata["metrics"]["test"]["images"] == 118
    # The final model is the refit of the run that chose on validation, as the committed one is.
    assert metadata["training"]["selection_run"]["run"] == f"{out_dir.name}_selection"
    assert metadata["metrics"]["val"] == metadata["training"]["selection_run"]["val"]
    if config.HAM_IMAGES_DIR.is_dir():
        assert metadata["metrics"]["ham_test"]["label_level"] == "HAM10000 dx"
    assert (out_dir / config.MODEL_TFLITE_FILE).is_file()
    after = hashlib.sha256(committed.read_bytes()).hexdigest() if committed.is_file() else None
    assert after == before  # a quick run never overwrites the committed model
