"""response_format as a grammar: what is enforced, what is refused, and the converter's extensions."""

from __future__ import annotations

import pytest

from hoshikage.engine.structured import SchemaNotSupported, json_object_grammar, json_schema_grammar


def test_json_object_has_an_object_at_the_root():
    assert "root   ::= object" in json_object_grammar()


@pytest.mark.parametrize(("schema", "keyword"), [
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "string", "format": "email"}, "email"),
    ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
    ({"type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}}, "multipleOf"),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
    ({"type": "integer", "minimum": 5}, "minimum"),
    ({"type": "integer", "minimum": 0, "maximum": 10**6}, "1000"),
    ({"type": "number", "minimum": 0.5, "maximum": 2}, "whole numbers"),
    ({"type": "string", "pattern": "^a+$", "maxLength": 3}, "pattern"),
    ({"$ref": "https://example.com/schema.json"}, "local references"),
    ({"allOf": [{"type": "string"}]}, "allOf"),
    # Subschemas beside a union would be copied into every branch (a grammar that grows exponentially).
    ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}], "properties": {"a": {"type": "string"}}}, "properties"),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 0}, "uniqueItems"),
])
def test_what_a_grammar_cannot_enforce_is_refused_by_name(schema, keyword):
    with pytest.raises(SchemaNotSupported, match=keyword):
        json_schema_grammar(schema)


def test_integer_and_number_bounds_are_spelled_out():
    grammar = json_schema_grammar({"type": "object", "properties": {
        "age": {"type": "integer", "minimum": 0, "maximum": 3},
        "score": {"type": "number", "minimum": 0, "maximum": 2},
        "count": {"type": "integer", "minimum": 1}}, "required": ["age", "score", "count"]})
    assert 'age ::= ("0" | "1" | "2" | "3") space' in grammar
    assert 'score ::= (("0" | "1") ("." [0-9]{1,15})? | "2" ("." "0"{1,15})?) space' in grammar
    assert "count ::= ([1-9] [0-9]{0,15}) space" in grammar


def test_unanchored_patterns_are_anchored_whole():
    grammar = json_schema_grammar({"type": "string", "pattern": "[A-Z]{2}|x"})
    assert "[A-Z]" in grammar and "x" in grammar


def test_annotations_and_local_references_are_fine():
    grammar = json_schema_grammar({"$defs": {"colour": {"enum": ["red", "blue"]}}, "title": "T",
                                   "type": "object", "properties": {"c": {"$ref": "#/$defs/colour"}},
                                   "required": ["c"], "description": "d"})
    assert '"\\"red\\""' in grammar
