"""Validate our JSON against OpenAI's published schemas (a trimmed copy in tests/data)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

SCHEMAS = Path(__file__).with_name("data") / "openai-schemas.json"


@functools.cache
def _registry():
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = json.loads(SCHEMAS.read_text())
    return Registry().with_resource(
        "openai", Resource.from_contents(document, default_specification=DRAFT202012))


def assert_valid(schema_name: str, instance) -> None:
    import jsonschema

    schema = {"$ref": f"openai#/components/schemas/{schema_name}"}
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda error: list(error.path))
    assert not errors, f"{schema_name}: " + "; ".join(
        f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors[:5])
