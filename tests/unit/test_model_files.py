"""Whether the systemd service could read a model file, decided before it is registered or loaded."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from hoshikage.engine.model_access import why_unloadable
from hoshikage.model_files import service_installed, why_service_cannot_read


def test_paths_systemd_hides_from_the_service():
    assert "ProtectHome" in why_service_cannot_read(Path("/root/model.gguf"))
    assert "PrivateTmp" in why_service_cannot_read(Path("/tmp/model.gguf"))
    assert "which systemd hides from the service" in why_unloadable("m", Path("/root/no-such-dir/x.gguf"))


@pytest.fixture
def models(monkeypatch):
    """A directory anyone may enter (pytest's tmp_path is private), judged as if systemd did not hide it."""
    monkeypatch.setattr("hoshikage.model_files.hidden_from_service", lambda path: False)
    directory = Path(tempfile.mkdtemp(prefix="hoshikage-test-", dir="/var/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_a_file_only_its_owner_may_read(models):
    # Judged for the unprivileged user `nobody`, as it would be for the service user.
    private = models / "private.gguf"
    private.write_bytes(b"GGUF")
    private.chmod(0o600)
    reason = why_service_cannot_read(private, user="nobody")
    assert reason is not None and "may not read" in reason and "-rw-------" in reason
    private.chmod(0o644)
    models.chmod(0o700)
    try:
        assert "may not enter" in why_service_cannot_read(private, user="nobody")
    finally:
        models.chmod(0o755)
    assert why_service_cannot_read(private, user="nobody") is None


def test_no_such_service_user_means_no_verdict(tmp_path, monkeypatch):
    monkeypatch.setattr("hoshikage.model_files.hidden_from_service", lambda path: False)
    assert why_service_cannot_read(tmp_path, user="no-such-user-here") is None


def test_service_installed_looks_for_the_unit(tmp_path):
    unit = tmp_path / "hoshikage.service"
    assert not service_installed((unit,))
    unit.write_text("[Service]\n")
    assert service_installed((unit,))


def test_why_unloadable_names_the_cause_and_the_fix(models):
    missing = why_unloadable("m", models / "gone.gguf")
    assert "does not exist" in missing and "hoshikage add --import FILE m --replace" in missing
    assert "not a regular file" in why_unloadable("m", models)
    present = models / "here.gguf"
    present.write_bytes(b"GGUF")
    assert why_unloadable("m", present) is None
