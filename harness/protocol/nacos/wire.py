"""The Nacos 2.x gRPC wire: proto messages without a package, built at import time from a
descriptor (no generated code to commit), and the two method paths.

research/nacos-protocol.md §1.1: ``Metadata{type=3, clientIp=8, headers=7}``,
``Payload{metadata=2, body=3 (google.protobuf.Any)}``; services ``Request/request`` (unary)
and ``BiRequestStream/requestBiStream`` (bidi). A private descriptor pool keeps these
package-less names away from any other copy (nacos-sdk-python registers its own).
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

UNARY_METHOD = "/Request/request"
BISTREAM_METHOD = "/BiRequestStream/requestBiStream"
REQUEST_SERVICE = "Request"
BISTREAM_SERVICE = "BiRequestStream"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="connformance_nacos_grpc_service.proto",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )
    meta = fdp.message_type.add(name="Metadata")
    meta.field.add(name="type", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="type")
    meta.field.add(name="clientIp", number=8, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="clientIp")
    entry = meta.nested_type.add(name="HeadersEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    meta.field.add(
        name="headers", number=7, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
        type_name=".Metadata.HeadersEntry", json_name="headers",
    )
    payload = fdp.message_type.add(name="Payload")
    payload.field.add(name="metadata", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".Metadata")
    payload.field.add(name="body", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".google.protobuf.Any")
    return fdp


_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
_pool.Add(_file_descriptor())

Metadata = message_factory.GetMessageClass(_pool.FindMessageTypeByName("Metadata"))
Payload = message_factory.GetMessageClass(_pool.FindMessageTypeByName("Payload"))


def serialize(payload) -> bytes:  # grpc serializer
    return payload.SerializeToString()


def deserialize(data: bytes):  # grpc deserializer
    return Payload.FromString(data)
