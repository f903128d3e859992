"""Server reflection as both ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1``.

grpcio-reflection ships only v1alpha, and tools that speak only v1 (newer
grpcurl, Postman, grpc-java's) find nothing. The two versions are the same
messages under another package, so v1 is served by the same servicer: its
descriptor is derived from v1alpha's (package renamed) and added to the pool,
so that v1 clients can describe the v1 service too, and its requests and
responses travel as the v1alpha messages, which have the same wire format.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

_ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{_V1}.ServerReflection"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Put grpc/reflection/v1/reflection.proto, derived from v1alpha's, into ``pool`` (once)."""
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = _V1
    renamed = f".{_ALPHA}.", f".{_V1}."
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(*renamed)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(*renamed)
            method.output_type = method.output_type.replace(*renamed)
    pool.Add(proto)


def enable(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection for ``service_names`` (plus both reflection services) under v1alpha and v1."""
    pool = descriptor_pool.Default()
    _add_v1_descriptor(pool)
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names, pool=pool)
    reflection.enable_server_reflection(names, server, pool=pool)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),))
