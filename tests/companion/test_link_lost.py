"""A link that drops in the middle of a request gives LinkLostError, never a bare CancelledError (issue 16).

The real client against the real box on a Bumble virtual link; the box is made to drop the
connection at the moment it receives the request (as a phone walking out of range would), so the
client's GATT operation is still waiting for its answer when the link goes.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from bumble.att import AttributeValue
from melisma import protocol as p
from melisma_companion.client import LinkLostError


def run(coro, timeout: float = 90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def paired_client(rig):
    client = rig.client(rig.central())
    await client.connect()
    rig.box.pairing_window.open(30)
    await client.pair()
    return client


def drop_during(box, char) -> list:
    """Make ``char`` on the box drop the link when it is read or written, and never answer."""
    dropped = []

    async def drop(connection, *_value):
        dropped.append(connection)
        await connection.disconnect()
        await asyncio.sleep(3600)

    char.value = AttributeValue(read=drop, write=drop)
    return dropped


REQUESTS = {
    "controls": (lambda s: s.controls, lambda c: c.set_controls(style="cpop", warmth=0.2)),
    "status": (lambda s: s.status, lambda c: c.read_status()),
    "start": (lambda s: s.command, lambda c: c.start_mix("take.wav", "backing.wav", "mix.wav")),
    "list": (lambda s: s.library, lambda c: c.list_library()),
    "info": (lambda s: s.info, lambda c: c.read_info()),
}


@pytest.mark.parametrize("what", sorted(REQUESTS))
def test_link_drop_mid_request_is_link_lost(rig_factory, what):
    rig = rig_factory()
    char_of, request = REQUESTS[what]

    async def main():
        await rig.start_box()
        client = await paired_client(rig)
        dropped = drop_during(rig.box, char_of(rig.box.service))
        try:
            await request(client)
        except asyncio.CancelledError:  # the bug: a bare CancelledError escaped the client
            return "CancelledError", dropped
        except LinkLostError as exc:
            return exc, dropped
        finally:
            await client.disconnect()
            await rig.stop_box()
        return None, dropped

    outcome, dropped = run(main())
    assert dropped, "the box never saw the request"
    assert isinstance(outcome, LinkLostError), outcome
    assert "dropped" in str(outcome)


def test_link_drop_at_upload_commit_resumes_and_stores_the_file(rig_factory, tmp_path):
    rig = rig_factory()
    data = os.urandom(30_000)
    src = tmp_path / "take.m4a"
    src.write_bytes(data)

    async def main():
        await rig.start_box()
        client = await paired_client(rig)
        service = rig.box.service
        original = service._write_transfer_control
        drops = []

        def write_control(connection, value):
            if value[:1] == bytes([p.MessageType.UPLOAD_COMMIT]) and not drops:
                drops.append(value)

                async def drop():  # the commit never reaches storage: the link goes, unanswered
                    await connection.disconnect()
                    await asyncio.sleep(3600)

                return drop()
            return original(connection, value)

        service.transfer_control.value = AttributeValue(read=lambda c: b"", write=write_control)
        entry = await client.upload(src, "take", retries=2)  # resumes after the drop, commits again
        offset = client.last_resume_offset
        await client.disconnect()
        await rig.stop_box()
        return drops, entry, offset

    drops, entry, offset = run(main())
    assert len(drops) == 1
    assert offset == len(data)  # the resume found every byte already held
    assert entry.size == len(data)
    assert (tmp_path / "box" / "library" / "takes" / "take.m4a").read_bytes() == data
