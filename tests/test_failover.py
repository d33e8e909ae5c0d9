"""A Vault name with several addresses: a connection failure on one moves to the next.

The host's resolver gives only one address for localhost, so this test (in-process, not
end to end) makes the resolver answer with a dead address first and the emulator's
second; the HTTPS exchange itself is real, through the tool's VaultClient (one
requests.Session), against the real emulator over TLS.
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
    asked = []

    def two_addresses(host, *args, **kwargs):
        if host == "localhost":
            asked.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    config = irg.parse_args(["-a", testbed.vault_url, "--cafile", testbed.ca_file])
    with irg.VaultClient(config, time.monotonic() + 10) as client:
        resp = client.call("GET", "/v1/auth/token/lookup-self", "token lookup",
                           token="not-a-token", retry=False)
    assert asked, "the resolver was not asked: the test proves nothing"
    assert resp.status == 403          # the emulator answered, through the second address
    assert client.requests_made == 1   # one attempt: the failover happened inside connect
    assert testbed.emu.state()["connections"] == 1
