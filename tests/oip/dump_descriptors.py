"""Print the wire shape of OIP protobuf descriptors as JSON: run with tritonclient's venv, or inferd's (``--inferd``).

Every message's fields (number, type, label, message/enum type), every enum's values and every service
method; tests/e2e/test_oip_wire.py compares the two so that inferd's protos/inference/v2 stays wire
compatible with Triton's grpc_service.proto and model_config.proto.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _messages(descriptor: Any, out: dict[str, Any]) -> None:
    fields = {}
    for field in descriptor.fields:
        kind = field.message_type or field.enum_type
        repeated = bool(field.is_repeated)
        fields[field.name] = [field.number, field.type, repeated, kind.full_name if kind else ""]
    out["messages"][descriptor.full_name] = fields
    for enum in descriptor.enum_types:
        out["enums"][enum.full_name] = {value.name: value.number for value in enum.values}
    for nested in descriptor.nested_types:
        _messages(nested, out)


def dump(files: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": {}, "enums": {}, "methods": {}}
    for file in files:
        for message in file.message_types_by_name.values():
            _messages(message, out)
        for enum in file.enum_types_by_name.values():
            out["enums"][enum.full_name] = {value.name: value.number for value in enum.values}
        for service in file.services_by_name.values():
            for method in service.methods:
                out["methods"][f"{service.full_name}/{method.name}"] = [
                    method.input_type.full_name,
                    method.output_type.full_name,
                    method.client_streaming,
                    method.server_streaming,
                ]
    return out


def main() -> None:
    if "--inferd" in sys.argv:
        from inferd.oip.v2 import grpc_service_pb2

        files = [grpc_service_pb2.DESCRIPTOR]
    else:
        from tritonclient.grpc import model_config_pb2, service_pb2

        files = [service_pb2.DESCRIPTOR, model_config_pb2.DESCRIPTOR]
    print(json.dumps(dump(files)))


if __name__ == "__main__":
    main()
