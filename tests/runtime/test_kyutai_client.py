"""Kyutai's ``python -m moshi.client``, unchanged, headless (PulseAudio null sinks, speech
from espeak-ng as its microphone): it holds a conversation with the runtime."""

from __future__ import annotations

import pytest

from voicefleet.testing.kyutai_client import HeadlessAudio
from voicefleet.testing.runtime_process import RuntimeServer

pytestmark = pytest.mark.runtime

SECONDS = 5.0


def test_kyutais_command_line_client_talks_to_the_runtime(shared_server: RuntimeServer) -> None:
    before = shared_server.metric("sessions_started_total", protocol="moshi")
    with HeadlessAudio() as audio:
        run = audio.run_client(shared_server.ws, SECONDS)
    assert run.exit_code is None, run  # still talking when the user stopped it
    assert "Info: connected!" in run.stderr, run.stderr
    assert not run.lost_connection, run.stderr
    # The model's text flows only once the client's microphone audio reaches the model (a
    # slot steps from its caller's first frame on): about 12 pieces a second.
    assert len(run.words) >= 2 * SECONDS, run.stdout
    assert shared_server.metric("sessions_started_total", protocol="moshi") == before + 1
    shared_server.wait_idle()
