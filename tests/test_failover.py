"""A Vault name with several addresses: a connection failure on one moves to the next.

The host's resolver gives only one address for localhost, so this test (in-process, not
end to end) makes the resolver answer with a dead address first and the emulator's
second; the HTTPS exchange itself is real, against the real emulator over TLS.
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import igwn_robot_get as irg


def test_connection_failure_moves_to_next_address(testbed, monkeypatch):
    real = socket.getaddrinfo
    port = testbed.vault_port

    def two_addresses(host, *args, **kwargs):
        if host == "localhost":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    client = irg.VaultClient(testbed.vault_url, testbed.ca_file, None,
                             time.monotonic() + 10)
    try:
        resp = client.request("GET", "/v1/auth/token/lookup-self", token="not-a-token")
    finally:
        client.close()
    assert resp.status == 403          # the emulator answered, through the second address
    assert client.requests_made == 1   # one attempt: the failover happened inside connect
