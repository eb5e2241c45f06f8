"""Drives a running bay-server with the published Python SDK (shipyard-python-sdk 0.2.x).

usage: python sdk_client.py <bay url> [access token]

Creates a ship, runs Python and shell, writes and reads a file, uploads and downloads a file,
extends the TTL and reads the logs; deletes the ship at the end. Exits non-zero on any error.
"""

import asyncio
import os
import sys
import tempfile
import uuid

from shipyard import ShipyardClient, Spec


def check(condition, what, value):
    if not condition:
        raise AssertionError(f"{what}: unexpected {value!r}")


async def main(url: str, token: str) -> None:
    session_id = f"sdk-{uuid.uuid4()}"
    async with ShipyardClient(url, token) as client:
        ship = await client.create_ship(ttl=600, spec=Spec(cpus=0.5, memory="256m"), session_id=session_id)
        print(f"ship {ship.id} status {ship.status}")
        check(ship.status == 1, "ship status", ship.status)
        try:
            r = await ship.python.exec("x = 6 * 7\nprint(x)")
            check(r["success"] and r["data"]["success"], "python exec", r)
            check("42" in r["data"]["output"]["text"], "python output", r)
            r = await ship.python.exec("print(x + 1)")
            check("43" in r["data"]["output"]["text"], "python state kept", r)

            r = await ship.shell.exec("echo hello from $0; pwd")
            check(r["data"]["return_code"] == 0 and "hello" in r["data"]["stdout"], "shell exec", r)

            r = await ship.fs.write_file("sdk/notes.txt", "ünïcode line\n")
            check(r["success"], "write_file", r)
            r = await ship.fs.read_file("sdk/notes.txt")
            check(r["data"]["content"] == "ünïcode line\n", "read_file", r)

            payload = os.urandom(3 * 1024 * 1024 + 17)
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, "up.bin")
                with open(local, "wb") as f:
                    f.write(payload)
                r = await ship.upload_file(local, "sdk/up.bin")
                check(r.get("success") is True and r["file_path"].endswith("sdk/up.bin"), "upload", r)
                back = os.path.join(tmp, "down.bin")
                await ship.download_file("sdk/up.bin", back)
                with open(back, "rb") as f:
                    check(f.read() == payload, "downloaded bytes", "mismatch")

            before = (await client.get_ship(ship.id))["ttl"]
            r = await ship.extend_ttl(300)
            check(r["ttl"] > before, "extend_ttl", (before, r["ttl"]))

            logs = await ship.get_logs()
            check(isinstance(logs, str), "logs", type(logs))
            print("all SDK operations succeeded")
        finally:
            session = await client._get_session()
            async with session.delete(f"{client.endpoint_url}/ship/{ship.id}/permanent") as resp:
                check(resp.status == 204, "permanent delete", resp.status)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else os.getenv("SHIPYARD_TOKEN", "secret-token")))
