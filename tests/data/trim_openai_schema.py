"""Regenerate openai-schemas.json: the few response schemas the tests check, from OpenAI's spec.

    python tests/data/trim_openai_schema.py ../shared/reference/openai-openapi.json

Keeps the named schemas and everything they reference, and rewrites OpenAPI's
``nullable: true`` (which JSON Schema validators ignore) as an explicit null type.
"""

import json
import sys
from pathlib import Path

ROOTS = ["CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
         "CreateCompletionResponse", "ListModelsResponse", "Model", "ErrorResponse",
         "Response", "ResponseStreamEvent", "ResponseItemList", "CompactResource", "ConversationResource",
         "DeletedConversationResource", "ConversationItemList"]


def references(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"].rsplit("/", 1)[-1]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def without_nullable(node):
    if isinstance(node, list):
        return [without_nullable(value) for value in node]
    if not isinstance(node, dict):
        return node
    node = {key: without_nullable(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def main(spec_path: str) -> None:
    schemas = json.loads(Path(spec_path).read_text())["components"]["schemas"]
    kept, todo = {}, list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in kept:
            kept[name] = schemas[name]
            todo.extend(references(schemas[name]))
    out = Path(__file__).with_name("openai-schemas.json")
    document = {"source": "openai-openapi.json components/schemas (MIT)",
                "components": {"schemas": without_nullable(dict(sorted(kept.items())))}}
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(kept)} schemas -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
