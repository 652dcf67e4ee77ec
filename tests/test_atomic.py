import json
import os
import stat

import pytest

from jace.atomic import INCOMPLETE_MARKER, atomic_directory, atomic_file, check_complete


def _save(tmp, model_type="bert", weights="new"):
    (tmp / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["X"]}))
    (tmp / "model.safetensors").write_text(weights)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "head.bin").write_text(weights)


def test_saving_into_a_folder_keeps_its_unrelated_files_and_subfolders(tmp_path):
    target = tmp_path / "models"
    (target / "mydata").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    (target / "mydata" / "rows.csv").write_text("a,b\n")
    (target / "sub").mkdir()
    (target / "sub" / "keep.txt").write_text("also mine")
    with atomic_directory(target) as tmp:
        _save(tmp)
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "mydata" / "rows.csv").read_text() == "a,b\n"
    assert (target / "sub" / "keep.txt").read_text() == "also mine"
    assert (target / "model.safetensors").read_text() == "new" and (target / "sub" / "head.bin").read_text() == "new"
    assert not (target / INCOMPLETE_MARKER).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def test_saving_the_same_kind_of_model_again_replaces_its_files_and_stale_shards(tmp_path):
    target = tmp_path / "m"
    with atomic_directory(target) as tmp:
        _save(tmp, weights="old")
        (tmp / "model-00001-of-00002.safetensors").write_text("old shard")
    with atomic_directory(target) as tmp:
        _save(tmp, weights="new")
    assert (target / "model.safetensors").read_text() == "new"
    assert not (target / "model-00001-of-00002.safetensors").exists()


def test_a_folder_holding_a_different_model_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "m"
    with atomic_directory(target) as tmp:
        _save(tmp, model_type="bert", weights="bert")
    with pytest.raises(FileExistsError, match="different model.*overwrite"):
        with atomic_directory(target) as tmp:
            _save(tmp, model_type="xlm-roberta", weights="xlmr")
    assert (target / "model.safetensors").read_text() == "bert"
    with atomic_directory(target, overwrite=True) as tmp:
        _save(tmp, model_type="xlm-roberta", weights="xlmr")
    assert json.loads((target / "config.json").read_text())["model_type"] == "xlm-roberta"


def test_a_failed_save_leaves_the_target_as_it_was_and_no_temporary_folder(tmp_path):
    target = tmp_path / "m"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            _save(tmp)
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_a_new_model_folder_gets_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "m") as tmp:
            _save(tmp)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755


def test_an_interrupted_save_is_reported_when_loading(tmp_path):
    (tmp_path / INCOMPLETE_MARKER).write_text("")
    with pytest.raises(ValueError, match="interrupted"):
        check_complete(tmp_path)


def test_output_paths_of_the_wrong_kind_are_clear_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        with atomic_directory(tmp_path / "file"):
            pass
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_file(tmp_path):
            pass
