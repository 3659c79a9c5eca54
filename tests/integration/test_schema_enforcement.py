"""What a schema says, the grammar enforces: checked by walking texts through llama.cpp's grammar (issue 24).

Sampling finds a hole in a grammar only when the dice fall that way (a 28-character answer to
``{"type": ["string", "null"], "maxLength": 8}`` came once in a CI run); here every keyword under a type list,
beside a union, or stating a default, is checked against a text that must pass and one that must not, with
the real model's tokenizer and llama.cpp's own grammar sampler, every run.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from hoshikage.engine.structured import json_schema_grammar
from tests.grammar_walk import grammar_accepts


@pytest.fixture(scope="module")
def gemma_vocab(gemma_path):
    from tests.llama_reference import reference_llama

    return reference_llama(model_path=str(gemma_path), vocab_only=True, verbose=False)


NULLABLE = [  # (schema, an instance it allows, an instance it refuses)
    ({"type": ["string", "null"], "maxLength": 8}, "abc", "abcdefghijklmnopqrstuvwxyz0"),
    ({"type": ["string", "null"], "minLength": 3}, "abcd", "ab"),
    ({"type": ["null", "string"], "pattern": "^[a-c]+$"}, "abc", "abd"),
    ({"type": ["string", "null"], "format": "date"}, "2026-12-06", "tomorrow"),
    ({"type": ["integer", "null"], "minimum": 1, "maximum": 5}, 3, 9),
    ({"type": ["number", "null"], "minimum": 0, "maximum": 2}, 1.5, 7),
    ({"type": ["array", "null"], "items": {"type": "integer"}, "maxItems": 2}, [1, 2], [1, 2, 3]),
    ({"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 2}, [1, 2], [1]),
    ({"type": ["array", "null"], "items": {"type": "integer"}}, [1], ["x"]),
    ({"type": ["object", "null"], "properties": {"a": {"type": "integer"}}, "required": ["a"],
      "additionalProperties": False}, {"a": 1}, {"b": 1}),
    ({"type": ["string", "integer"], "maxLength": 2, "maximum": 9, "minimum": 0}, 7, "abc"),
    ({"type": "object", "properties": {"maybe": {"type": ["string", "null"], "maxLength": 8}},
      "required": ["maybe"]}, {"maybe": None}, {"maybe": "a string far longer than eight"}),
    ({"type": "string", "anyOf": [{"maxLength": 3}, {"pattern": "^x+$"}]}, "xxxxxx", "abcdef"),
    ({"type": ["string"], "maxLength": 2}, "ab", "abc"),
    ({"type": ["string", "null"], "anyOf": [{"maxLength": 2}, {"pattern": "^x+$"}]}, "xxxx", "abc"),
]


@pytest.mark.parametrize(("schema", "allowed", "refused"), NULLABLE, ids=[json.dumps(case[0]) for case in NULLABLE])
def test_keywords_under_a_type_list_or_beside_a_union_hold(gemma_vocab, schema, allowed, refused):
    jsonschema.validate(allowed, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(refused, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    grammar = json_schema_grammar(schema)
    assert grammar_accepts(gemma_vocab, grammar, json.dumps(allowed))
    assert grammar_accepts(gemma_vocab, grammar, "null") == ("null" in schema.get("type", []))
    assert not grammar_accepts(gemma_vocab, grammar, json.dumps(refused))


STATING_DEFAULTS = [
    {"type": "array", "items": {"type": "integer"}, "uniqueItems": False},
    {"type": "array", "items": {"type": "integer"}, "minItems": 0},
    {"type": "string", "minLength": 0},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "minProperties": 0, "required": []},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "dependentRequired": {},
     "patternProperties": {}, "unevaluatedProperties": True},
]


@pytest.mark.parametrize("schema", STATING_DEFAULTS, ids=[json.dumps(case) for case in STATING_DEFAULTS])
def test_a_keyword_that_asks_for_nothing_is_accepted(gemma_vocab, schema):
    grammar = json_schema_grammar(schema)
    instance = {"array": [1, 1], "string": "", "object": {"a": 1}}[schema["type"]]
    assert grammar_accepts(gemma_vocab, grammar, json.dumps(instance))
    assert not grammar_accepts(gemma_vocab, grammar, json.dumps("x" if schema["type"] != "string" else 1))


ODD_TEXT = [  # JSON text with escapes, as a property name and as a value
    ({"type": "object", "properties": {'a"b': {"type": "integer"}}, "required": ['a"b'],
      "additionalProperties": False}, {'a"b': 1}),
    ({"type": "object", "properties": {"back\\slash": {"type": "null"}, "\u00d1;r\u0086\u00b2\"\u001f": {
        "type": "boolean"}}, "required": ["back\\slash"], "additionalProperties": False},
     {"back\\slash": None, "\u00d1;r\u0086\u00b2\"\u001f": True}),
    ({"enum": ["a\\b", 'say "hi"', "tab\there"]}, 'say "hi"'),
    ({"const": "C:\\temp\\new"}, "C:\\temp\\new"),
]


@pytest.mark.parametrize(("schema", "instance"), ODD_TEXT, ids=[json.dumps(case[0]) for case in ODD_TEXT])
def test_quotes_and_backslashes_in_names_and_values_are_written_as_json(gemma_vocab, schema, instance):
    grammar = json_schema_grammar(schema)
    assert grammar_accepts(gemma_vocab, grammar, json.dumps(instance))
    # One escape fewer is another value (or no JSON at all), and is refused.
    assert not grammar_accepts(gemma_vocab, grammar, json.dumps(instance).replace("\\", "", 1))


@pytest.mark.parametrize("schema", [{"type": "string"}, {"type": "string", "maxLength": 40},
                                    {"type": "object", "properties": {"text": {"type": "string"}},
                                     "required": ["text"]}], ids=["string", "maxLength", "property"])
def test_a_string_holds_no_raw_control_character(gemma_vocab, schema):
    # JSON forbids them unescaped; once the grammar let a newline through, and the answer did not parse (a
    # forced tool call's arguments answered 500).
    value = "two\nlines" if schema["type"] == "string" else {"text": "two\nlines"}
    escaped = json.dumps(value)
    grammar = json_schema_grammar(schema)
    assert grammar_accepts(gemma_vocab, grammar, escaped)
    assert not grammar_accepts(gemma_vocab, grammar, escaped.replace("\\n", "\n"))
