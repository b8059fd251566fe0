"""What the pretrained-weight tests share: a download that never reaches the network."""

import keras
import pytest


@pytest.fixture
def fake_download(monkeypatch):
    """``serve(path) -> calls``: replaces keras' downloader with one that records its arguments in
    ``calls`` (``(fname, origin, cache_subdir)`` each) and hands back the local file ``path``."""

    def serve(path):
        calls = []

        def get_file(fname, origin, cache_subdir):
            calls.append((fname, origin, cache_subdir))
            return str(path)

        monkeypatch.setattr(keras.utils, "get_file", get_file)
        return calls

    return serve
