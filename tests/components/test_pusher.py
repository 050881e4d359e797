"""The Pusher's copy: a new version appears whole or not at all, and no version is written into."""
import os

import pytest

from mtmoe.components import pusher


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "Format-Serving"
    (folder / "variables").mkdir(parents=True)
    (folder / "variables" / "variables.index").write_bytes(b"index")
    (folder / "assets.extra").mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph")
    return str(folder)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def test_a_push_writes_one_complete_numbered_version_and_nothing_else(model, tmp_path):
    serving = tmp_path / "serving"
    final = pusher.push_atomically(model, str(serving))
    assert os.listdir(serving) == [os.path.basename(final)]
    assert os.path.basename(final).isdigit()
    assert _files(final) == _files(model)


def test_a_new_version_goes_past_the_highest_and_leaves_it_untouched(model, tmp_path):
    serving = tmp_path / "serving"
    future = serving / "9999999999"
    future.mkdir(parents=True)
    (future / "saved_model.pb").write_bytes(b"the served model")
    final = pusher.push_atomically(model, str(serving))
    assert os.path.basename(final) == "10000000000"
    assert (future / "saved_model.pb").read_bytes() == b"the served model"
    assert _files(future) == ["saved_model.pb"]


def test_a_push_killed_mid_copy_leaves_no_version_and_the_next_push_cleans_up(model, tmp_path,
                                                                          monkeypatch):
    serving = tmp_path / "serving"
    copy_dir = pusher.io_utils.copy_dir

    def copy_then_die(source, destination):
        copy_dir(os.path.join(source, "variables"), os.path.join(destination, "variables"))
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(pusher.io_utils, "copy_dir", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        pusher.push_atomically(model, str(serving))
    left = os.listdir(serving)
    assert len(left) == 1 and left[0].endswith(pusher.INCOMPLETE) and not any(
        name.isdigit() for name in left)
    monkeypatch.setattr(pusher.io_utils, "copy_dir", copy_dir)
    final = pusher.push_atomically(model, str(serving))
    assert os.listdir(serving) == [os.path.basename(final)]
