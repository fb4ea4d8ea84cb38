"""The AsyncAPI document: generated from the app, committed as docs/asyncapi.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from events.contract.subjects import AUDITS, COMMANDS, HEALTH, QUERIES
from services.asyncapi import render
from services.settings import Settings

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"
SUBJECTS = (
    [f"flows.cmd.{name}" for name in COMMANDS]
    + [f"flows.query.{name}" for name in QUERIES]
    + [f"flows.audit.{name}" for name in AUDITS + HEALTH]
)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """What a local `$ref` points at, following references to references."""
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return resolve(doc, node["$ref"]) if isinstance(node, dict) and "$ref" in node else node


def test_the_committed_document_is_the_apps() -> None:
    generated = render(Settings())
    assert COMMITTED.read_text() == generated, (
        "docs/asyncapi.json is not the app's document: regenerate it with "
        "`flows asyncapi > docs/asyncapi.json` (with no FLOWS_* variables set) and commit it"
    )


def test_every_subject_has_its_request_and_reply_schemas() -> None:
    doc = orjson.loads(render(Settings()))
    assert doc["asyncapi"] == "3.0.0"
    channels = {channel["address"]: key for key, channel in doc["channels"].items()}
    assert sorted(channels) == sorted(SUBJECTS)
    for operation in doc["operations"].values():
        channel = resolve(doc, operation["channel"]["$ref"])
        assert channel["bindings"]["nats"]["queue"] == "flows"
        request = resolve(doc, operation["messages"][0]["$ref"])
        payload = resolve(doc, request["payload"]["$ref"])
        assert payload["type"] == "object", channel["address"]
        [reply_ref] = operation["reply"]["messages"]
        reply = resolve(doc, reply_ref["$ref"])
        headers = resolve(doc, reply["headers"]["$ref"])
        assert "Flows-Status" in headers["properties"]
        assert "Flows-Status" in headers["required"]
        bodies = reply["payload"]["oneOf"]
        assert {"$ref": "#/components/schemas/Detail"} in bodies
        assert {"$ref": "#/components/schemas/InvalidRequest"} in bodies
    create = resolve(doc, "#/components/schemas/CreateFlow")
    assert create["required"] == ["name"]
    assert set(create["properties"]) == {"name", "tags", "labels"}
    flow = resolve(doc, "#/components/schemas/Flow")
    assert set(flow["properties"]) == {"id", "created", "updated", "name", "tags", "labels"}


def test_yaml_is_the_same_document() -> None:
    assert yaml.safe_load(render(Settings(), as_yaml=True)) == orjson.loads(render(Settings()))


def test_the_document_follows_the_subject_prefix() -> None:
    doc = orjson.loads(render(Settings(subject_prefix="acme.flows")))
    assert {c["address"] for c in doc["channels"].values()} == {
        subject.replace("flows.", "acme.flows.", 1) for subject in SUBJECTS
    }
