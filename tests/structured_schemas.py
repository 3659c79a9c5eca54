"""JSON Schemas for structured output: nested objects, bounded arrays, enums, optional properties, bounded
numbers, patterns. Each bounds its strings and arrays, so a tiny base model finishes within a few dozen
tokens. Shared by tests/integration/test_structured_output.py and tests/bench/bench_structured.py."""

NAME = {"type": "string", "minLength": 1, "maxLength": 12}
SCHEMAS = [
    {"type": "object", "properties": {"name": NAME}, "required": ["name"], "additionalProperties": False},
    {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["age"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False},
    {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}},
     "required": ["tags"], "additionalProperties": False},
    {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["score"]},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
     "required": ["code"]},
    {"type": "object", "properties": {"person": {"type": "object", "properties": {
        "name": NAME, "age": {"type": "integer", "minimum": 1, "maximum": 99}}, "required": ["name", "age"],
        "additionalProperties": False}}, "required": ["person"], "additionalProperties": False},
    {"type": "object", "properties": {"a": NAME, "b": NAME}, "required": ["a"], "additionalProperties": False},
    {"type": "object", "properties": {"point": {"type": "array", "prefixItems": [
        {"type": "integer", "minimum": 0, "maximum": 9}, {"type": "integer", "minimum": 0, "maximum": 9}]}},
     "required": ["point"]},
    {"type": "object", "properties": {"value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 50},
                                                          {"type": "boolean"}]}}, "required": ["value"]},
    {"type": "object", "properties": {"nothing": {"type": "null"}}, "required": ["nothing"]},
    {"type": "object", "properties": {"level": {"const": "high"}}, "required": ["level"]},
    {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}, "required": ["day"]},
    {"type": "object", "properties": {"items": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "properties": {"sku": NAME, "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["sku", "qty"], "additionalProperties": False}}}, "required": ["items"]},
    {"type": "object", "properties": {"maybe": {"type": ["string", "null"], "maxLength": 8}}, "required": ["maybe"]},
    {"$defs": {"pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}, "required": ["kind"],
                       "additionalProperties": False}},
     "type": "object", "properties": {"pets": {"type": "array", "items": {"$ref": "#/$defs/pet"}, "maxItems": 2}},
     "required": ["pets"]},
    {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}, "required": ["id"]},
    {"type": "object", "properties": {"temperature": {"type": "number", "minimum": -5, "maximum": 5}},
     "required": ["temperature"]},
    {"type": "object", "properties": {"matrix": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
        "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": 0, "maximum": 1}}}},
     "required": ["matrix"], "additionalProperties": False},
    {"type": "object", "properties": {"initials": {"type": "string", "pattern": "[A-Z]\\.[A-Z]\\."}},
     "required": ["initials"]},
]
