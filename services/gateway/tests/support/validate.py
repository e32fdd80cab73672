"""Validates JSON read from stdin, for the gateway's tests, with the `jsonschema` and
`openapi-schema-validator` packages that come with openapi-spec-validator.

    validate.py component <openapi.yaml> <schema name>   # an answer against a component schema
    validate.py json-schema                              # [{"schema": ..., "instance": ...}]

`component` prints nothing and exits 0 when valid, prints every error and exits 1 when not;
`json-schema` prints a JSON list: each pair's errors (an empty list when it is valid).
"""

import json
import sys

import yaml
from jsonschema import Draft202012Validator
from openapi_schema_validator import OAS30Validator, OAS31Validator


def component(spec_path, name, instance):
    with open(spec_path, encoding="utf-8") as file:
        spec = yaml.safe_load(file)
    if name not in spec["components"]["schemas"]:
        return [f"{spec_path} has no schema {name}"]
    # The schema's references point into the document's components: validate from a root
    # that holds them.
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    version = str(spec.get("openapi", "3.0"))
    validator = (OAS31Validator if version.startswith("3.1") else OAS30Validator)(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(instance)]


def json_schema(document):
    schema, instance = document["schema"], document["instance"]
    problems = [f"the schema: {error.message}"
                for error in Draft202012Validator(Draft202012Validator.META_SCHEMA)
                .iter_errors(schema)]
    if problems:
        return problems
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in Draft202012Validator(schema).iter_errors(instance)]


def main():
    document = json.load(sys.stdin)
    if sys.argv[1:2] == ["component"] and len(sys.argv) == 4:
        problems = component(sys.argv[2], sys.argv[3], document)
    elif sys.argv[1:] == ["json-schema"]:
        print(json.dumps([json_schema(pair) for pair in document]))
        return 0
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
