"""The interface a Ray task hands gloo is the one holding its node's address."""

from __future__ import annotations

import socket

from rainier.control.netif import interface_of


def test_the_interface_of_an_address_this_machine_holds() -> None:
    assert interface_of("127.0.0.1") == "lo"
    names = {name for _, name in socket.if_nameindex()}
    assert "lo" in names


def test_no_interface_for_an_address_this_machine_does_not_hold() -> None:
    assert interface_of("192.0.2.77") is None  # TEST-NET-1, never assigned
    assert interface_of("") is None
