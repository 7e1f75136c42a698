"""An operator client that knows nothing of the project: it learns the operator API from the
coordinator's server reflection, builds its messages from the descriptors it gets, lists the
metrics, launches a round and reads it. Run as a script, isolated (``python -I``):

    reflection_client.py ADDRESS CA_CERT CERT KEY

Prints a JSON report; imports grpc, protobuf and the reflection protocol only.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVICE = "fedoversight.v1.Oversight"


def load_pool(channel: grpc.Channel) -> descriptor_pool.DescriptorPool:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    pool = descriptor_pool.DescriptorPool()
    wanted = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)]
    seen: set[str] = set()
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    while wanted:
        for response in stub.ServerReflectionInfo(iter(wanted), timeout=30):
            for data in response.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(data)
                files[proto.name] = proto
        wanted = []
        for proto in files.values():
            for dependency in proto.dependency:
                if dependency not in files and dependency not in seen:
                    seen.add(dependency)
                    wanted.append(
                        reflection_pb2.ServerReflectionRequest(file_by_filename=dependency)
                    )
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dependency in files[name].dependency:
            add(dependency)
        pool.Add(files[name])
        added.add(name)

    for name in files:
        add(name)
    return pool


def main() -> int:
    address, ca, cert, key = sys.argv[1:5]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes(),
        certificate_chain=Path(cert).read_bytes(),
    )
    with grpc.secure_channel(address, credentials) as channel:
        pool = load_pool(channel)
        service = pool.FindServiceByName(SERVICE)

        def call(method: str, **fields: object) -> object:
            descriptor = service.methods_by_name[method]
            request_type = message_factory.GetMessageClass(descriptor.input_type)
            reply_type = message_factory.GetMessageClass(descriptor.output_type)
            stub = channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=request_type.SerializeToString,
                response_deserializer=reply_type.FromString,
            )
            return stub(request_type(**fields), timeout=60)

        metrics = call("ListMetrics")
        names = [m.name for m in metrics.metrics]  # type: ignore[attr-defined]
        period_type = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("fedoversight.v1.Period")
        )
        query_type = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("fedoversight.v1.Query")
        )
        summary = call(
            "CreateRound",
            period=period_type(first_month="2026-01", last_month="2026-03"),
            queries=[query_type(metric="cost.pmpm", metric_version=0)],
            deadline_seconds=60,
        )
        round_type = pool.FindEnumTypeByName("fedoversight.v1.RoundState")
        finished = {"ROUND_STATE_COMPLETE", "ROUND_STATE_PARTIAL", "ROUND_STATE_FAILED"}
        state = ""
        for _ in range(120):
            round_ = call("GetRound", round_id=summary.round_id)  # type: ignore[attr-defined]
            state = round_type.values_by_number[round_.summary.state].name  # type: ignore[attr-defined]
            if state in finished:
                break
            time.sleep(0.5)
        program = [t for t in round_.tables if t.scope == "program"]  # type: ignore[attr-defined]
    project = sorted(
        {m.split(".")[0] for m in sys.modules}
        & {"fedoversight", "coordinator", "carrier_node", "oversight_sim", "tests"}
    )
    print(
        json.dumps(
            {
                "metrics": len(names),
                "names": names,
                "state": state,
                "program_cells": sum(len(t.cells) for t in program),
                "project_modules": project,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
