"""The Connect wire format: protobuf messages (package `connect.v1`) built at import time.

The official SDKs ship the schema as `connect.proto`. Rather than vendor generated code, the
messages lockgate reads or writes are declared here as a table (name → fields with their wire
numbers) and turned into protobuf classes. Fields lockgate never looks at are left out: proto3
skips unknown fields, so the SDKs may send more than is declared here.
"""

from __future__ import annotations

from enum import IntEnum

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "connect.v1"


class Kind(IntEnum):
    """GatewayMessageType: what a ConnectMessage carries."""

    GATEWAY_HELLO = 0
    WORKER_CONNECT = 1
    GATEWAY_CONNECTION_READY = 2
    GATEWAY_EXECUTOR_REQUEST = 3
    WORKER_READY = 4
    WORKER_REQUEST_ACK = 5
    WORKER_REPLY = 6
    WORKER_REPLY_ACK = 7
    WORKER_PAUSE = 8
    WORKER_HEARTBEAT = 9
    GATEWAY_HEARTBEAT = 10
    GATEWAY_CLOSING = 11
    WORKER_REQUEST_EXTEND_LEASE = 12
    WORKER_REQUEST_EXTEND_LEASE_ACK = 13
    SYNC_FAILED = 14
    WORKER_STATUS = 15


class ReplyStatus(IntEnum):
    """SDKResponseStatus, and the HTTP status an SDK would have answered with."""

    NOT_COMPLETED = 0
    DONE = 1
    ERROR = 2

    @property
    def http_status(self) -> int:
        return {ReplyStatus.NOT_COMPLETED: 206, ReplyStatus.DONE: 200, ReplyStatus.ERROR: 500}[self]


_T = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _T.TYPE_STRING, "bytes": _T.TYPE_BYTES, "bool": _T.TYPE_BOOL, "int32": _T.TYPE_INT32,
            "int64": _T.TYPE_INT64, "uint32": _T.TYPE_UINT32, "enum": _T.TYPE_INT32}

# message → [(field, number, type, repeated)]; a type that is not a scalar names another message.
# Enum fields are read as plain integers (same wire encoding), compared against `Kind`/`ReplyStatus`.
_SCHEMA: dict[str, list[tuple[str, int, str, bool]]] = {
    "ConnectMessage": [("kind", 1, "enum", False), ("payload", 2, "bytes", False)],
    "AppConfiguration": [("app_name", 1, "string", False), ("app_version", 2, "string", False),
                         ("functions", 4, "bytes", False)],
    "AuthData": [("session_token", 1, "string", False), ("sync_token", 2, "string", False)],
    "SystemAttributes": [("cpu_cores", 1, "int32", False), ("mem_bytes", 2, "int64", False),
                         ("os", 3, "string", False)],
    "WorkerConnectRequestData": [
        ("connection_id", 1, "string", False), ("instance_id", 2, "string", False),
        ("auth_data", 3, "AuthData", False), ("capabilities", 4, "bytes", False),
        ("apps", 5, "AppConfiguration", True), ("worker_manual_readiness_ack", 6, "bool", False),
        ("system_attributes", 7, "SystemAttributes", False), ("environment", 8, "string", False),
        ("framework", 9, "string", False), ("platform", 10, "string", False), ("sdk_version", 11, "string", False),
        ("sdk_language", 12, "string", False), ("max_worker_concurrency", 14, "int64", False),
    ],
    "GatewayConnectionReadyData": [("heartbeat_interval", 1, "string", False),
                                   ("extend_lease_interval", 2, "string", False),
                                   ("status_interval", 3, "string", False)],
    "GatewayExecutorRequestData": [
        ("request_id", 1, "string", False), ("account_id", 2, "string", False), ("env_id", 3, "string", False),
        ("app_id", 4, "string", False), ("app_name", 5, "string", False), ("function_id", 6, "string", False),
        ("function_slug", 7, "string", False), ("step_id", 8, "string", False),
        ("request_payload", 9, "bytes", False), ("run_id", 12, "string", False), ("lease_id", 13, "string", False),
        ("job_id", 14, "string", False),
    ],
    "WorkerRequestAckData": [("request_id", 1, "string", False), ("run_id", 9, "string", False)],
    "WorkerRequestExtendLeaseData": [("request_id", 1, "string", False), ("run_id", 9, "string", False),
                                     ("lease_id", 10, "string", False)],
    "WorkerRequestExtendLeaseAckData": [
        ("request_id", 1, "string", False), ("account_id", 2, "string", False), ("env_id", 3, "string", False),
        ("app_id", 4, "string", False), ("function_slug", 5, "string", False), ("new_lease_id", 6, "string", False),
    ],
    "SDKResponse": [
        ("request_id", 1, "string", False), ("account_id", 2, "string", False), ("env_id", 3, "string", False),
        ("app_id", 4, "string", False), ("status", 5, "enum", False), ("body", 6, "bytes", False),
        ("no_retry", 7, "bool", False), ("retry_after", 8, "string", False), ("sdk_version", 9, "string", False),
        ("request_version", 10, "uint32", False), ("run_id", 13, "string", False),
    ],
    "WorkerReplyAckData": [("request_id", 1, "string", False)],
    "StartRequest": [("exclude_gateways", 1, "string", True)],
    "StartResponse": [("connection_id", 1, "string", False), ("gateway_endpoint", 2, "string", False),
                      ("gateway_group", 3, "string", False), ("session_token", 4, "string", False),
                      ("sync_token", 5, "string", False)],
    "FlushResponse": [("request_id", 1, "string", False)],
}


def _build() -> dict[str, type]:
    file = descriptor_pb2.FileDescriptorProto(name="lockgate_connect.proto", package=PACKAGE, syntax="proto3")
    for name, fields in _SCHEMA.items():
        message = file.message_type.add(name=name)
        for field_name, number, type_name, repeated in fields:
            field = message.field.add(name=field_name, number=number,
                                      label=_T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL)
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            else:
                field.type = _T.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()  # our own pool: no clash with an SDK loaded in-process
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in _SCHEMA}


_CLASSES = _build()
ConnectMessage = _CLASSES["ConnectMessage"]
AuthData = _CLASSES["AuthData"]
WorkerConnectRequestData = _CLASSES["WorkerConnectRequestData"]
GatewayConnectionReadyData = _CLASSES["GatewayConnectionReadyData"]
GatewayExecutorRequestData = _CLASSES["GatewayExecutorRequestData"]
WorkerRequestAckData = _CLASSES["WorkerRequestAckData"]
WorkerRequestExtendLeaseData = _CLASSES["WorkerRequestExtendLeaseData"]
WorkerRequestExtendLeaseAckData = _CLASSES["WorkerRequestExtendLeaseAckData"]
SDKResponse = _CLASSES["SDKResponse"]
WorkerReplyAckData = _CLASSES["WorkerReplyAckData"]
StartRequest = _CLASSES["StartRequest"]
StartResponse = _CLASSES["StartResponse"]
FlushResponse = _CLASSES["FlushResponse"]


def frame(kind: Kind, payload=None) -> bytes:
    """One ConnectMessage on the wire; `payload` is a message or already-encoded bytes."""
    if payload is not None and not isinstance(payload, bytes):
        payload = payload.SerializeToString()
    return ConnectMessage(kind=int(kind), payload=payload or b"").SerializeToString()
