import json
import multiprocessing

import pytest

from hoshikage.registry import ModelEntry, Registry, RegistryError


def test_add_get_remove_round_trip(tmp_path):
    registry = Registry(tmp_path / "models.json")
    registry.add(ModelEntry(alias="a", path="/m/a.gguf", context_length=512, chat_format="gemma"))
    assert Registry(tmp_path / "models.json").get("a").context_length == 512
    assert registry.remove("a").path == "/m/a.gguf"
    assert registry.entries() == {}


def test_duplicate_alias_needs_replace(tmp_path):
    registry = Registry(tmp_path / "models.json")
    registry.add(ModelEntry(alias="a", path="/one"))
    with pytest.raises(RegistryError, match="already registered"):
        registry.add(ModelEntry(alias="a", path="/two"))
    registry.add(ModelEntry(alias="a", path="/two"), replace=True)
    assert registry.get("a").path == "/two"


@pytest.mark.parametrize("alias", ["", "has space", "-leading", "x" * 200, "a/b"])
def test_invalid_aliases(tmp_path, alias):
    with pytest.raises(RegistryError, match="invalid alias"):
        Registry(tmp_path / "models.json").add(ModelEntry(alias=alias, path="/m"))


def test_reader_sees_changes_made_by_another_writer(tmp_path):
    reader, writer = Registry(tmp_path / "models.json"), Registry(tmp_path / "models.json")
    assert reader.entries() == {}
    writer.add(ModelEntry(alias="new", path="/m"))
    assert "new" in reader.entries()
    writer.remove("new")
    assert reader.entries() == {}


def test_reads_the_seed_model_map_format(tmp_path):
    path = tmp_path / "model_map.json"
    path.write_text(json.dumps({"models": {"old": "/models/old.gguf"}}))
    assert Registry(path).get("old").path == "/models/old.gguf"


def test_corrupt_registry_is_a_clear_error(tmp_path):
    path = tmp_path / "models.json"
    path.write_text("{ half")
    with pytest.raises(RegistryError, match="cannot read model registry"):
        Registry(path).entries()


def _add_many(path, prefix, count):
    registry = Registry(path)
    for index in range(count):
        registry.add(ModelEntry(alias=f"{prefix}-{index}", path=f"/m/{prefix}/{index}"))


def test_concurrent_writers_all_land(tmp_path):
    path = tmp_path / "models.json"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(path, f"w{n}", 15)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(Registry(path).entries()) == 60
    assert not list(tmp_path.glob(".models-*")), "no temporary files left behind"
