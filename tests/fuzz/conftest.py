"""Fuzz targets run in a scratch working directory: random nets may name output files
(HDF5Output file_name, snapshot prefixes) that must not land in the repository."""

import pytest


@pytest.fixture(autouse=True)
def _scratch_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
