"""`qkdpp node --metrics-file`: a folder that does not exist is a configuration error at start;
a write that fails later (full disk, folder removed) is logged once and the node goes on.
Before 2026-11-28 the OSError left the block loop and ended the node."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from qkdpp.engine.config import load_config
from qkdpp.engine.node import LinkNode
from qkdpp.errors import ConfigError


def _node(tmp_path: Path, metrics: Path) -> LinkNode:
    return LinkNode(
        "alice", load_config(None), ("127.0.0.1", 1), workdir=tmp_path, metrics_file=metrics
    )


def test_missing_folder_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        _node(tmp_path, tmp_path / "nope" / "qkdpp.prom")


def test_failed_write_is_logged_once_and_the_node_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    path = folder / "qkdpp.prom"
    node = _node(tmp_path, path)
    node._write_metrics(path)
    assert path.exists()
    shutil.rmtree(folder)  # e.g. a tmpfs cleaned under the running node
    with caplog.at_level(logging.WARNING, logger="qkdpp.engine.node"):
        node._write_metrics(path)
        node._write_metrics(path)
    warned = [r for r in caplog.records if "cannot write the metrics file" in r.getMessage()]
    assert len(warned) == 1
    folder.mkdir()
    node._write_metrics(path)  # works again once the folder is back
    assert path.exists()
