"""Connections driven through a fake link, h11-style: roles, direction checks, ERROR state."""

from __future__ import annotations

import pytest

from django_gearman.protocol import (
    Connection,
    ConnectionState,
    LocalProtocolError,
    Packet,
    PacketType,
    RemoteProtocolError,
    Role,
    TextLine,
)
from django_gearman.protocol.connection import RECEIVES, SENDS


def link(sender: Connection, receiver: Connection) -> list:
    return receiver.receive_data(sender.data_to_send())


def test_client_server_worker_conversation() -> None:
    client, server_c = Connection(Role.CLIENT), Connection(Role.SERVER)
    worker, server_w = Connection(Role.WORKER), Connection(Role.SERVER)
    client.send(PacketType.SUBMIT_JOB, b"reverse", b"", b"abc")
    (submit,) = link(client, server_c)
    assert submit.type is PacketType.SUBMIT_JOB
    server_c.send(PacketType.JOB_CREATED, b"H:test:1")
    assert link(server_c, client)[0].args == (b"H:test:1",)
    worker.send(PacketType.CAN_DO, b"reverse")
    worker.send(PacketType.GRAB_JOB_UNIQ)
    assert [p.type for p in link(worker, server_w)] == [PacketType.CAN_DO, PacketType.GRAB_JOB_UNIQ]
    server_w.send(PacketType.JOB_ASSIGN_UNIQ, b"H:test:1", b"reverse", b"", b"abc")
    assert link(server_w, worker)[0].get("data") == b"abc"
    worker.send(PacketType.WORK_COMPLETE, b"H:test:1", b"cba")
    (complete,) = link(worker, server_w)
    server_c.send_packet(Packet.response(PacketType.WORK_COMPLETE, *complete.args))
    assert link(server_c, client)[0].args == (b"H:test:1", b"cba")


def test_roles_cannot_send_the_other_sides_packets() -> None:
    with pytest.raises(LocalProtocolError, match="client may not send GRAB_JOB"):
        Connection(Role.CLIENT).send(PacketType.GRAB_JOB)
    with pytest.raises(LocalProtocolError, match="worker may not send SUBMIT_JOB"):
        Connection(Role.WORKER).send(PacketType.SUBMIT_JOB, b"f", b"", b"")
    with pytest.raises(LocalProtocolError, match="server may not send SUBMIT_JOB"):
        Connection(Role.SERVER).send_packet(Packet.request(PacketType.SUBMIT_JOB, b"f", b"", b""))


def test_unexpected_packet_is_remote_error_and_connection_breaks() -> None:
    client = Connection(Role.CLIENT)
    with pytest.raises(RemoteProtocolError, match="client does not expect NOOP"):
        client.receive_data(Packet.response(PacketType.NOOP).encode())
    assert client.state is ConnectionState.ERROR
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        client.send(PacketType.ECHO_REQ, b"")


def test_server_refuses_response_magic_with_invalid_magic_code() -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(Packet.response(PacketType.ECHO_RES, b"x").encode())
    assert info.value.code == "INVALID_MAGIC"
    error_packet = server.error_packet(info.value)
    assert error_packet.startswith(b"\0RES\x00\x00\x00\x13")
    assert b"INVALID_MAGIC\0" in error_packet


def test_server_accepts_text_and_every_request_type() -> None:
    server = Connection(Role.SERVER)
    assert server.receive_data(b"status\r\nworkers\n") == [TextLine(b"status"), TextLine(b"workers")]
    assert {t for _, t in RECEIVES[Role.SERVER]} == set(PacketType)


def test_worker_rejects_text() -> None:
    with pytest.raises(RemoteProtocolError):
        Connection(Role.WORKER).receive_data(b"hello\n")


def test_admin_commands_only_from_clients() -> None:
    client = Connection(Role.CLIENT)
    client.send_admin("show jobs")
    assert client.data_to_send() == b"show jobs\r\n"
    with pytest.raises(LocalProtocolError):
        Connection(Role.WORKER).send_admin("status")


def test_send_tables_are_disjoint_by_magic() -> None:
    assert all(magic == b"\0REQ" for magic, _ in SENDS[Role.CLIENT] | SENDS[Role.WORKER])
    assert all(magic == b"\0RES" for magic, _ in SENDS[Role.SERVER])
