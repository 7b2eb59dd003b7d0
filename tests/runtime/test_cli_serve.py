"""`voicefleet runtime serve` refuses bad input before it loads anything, with status 2 and
what to change."""

from __future__ import annotations

import pytest

from voicefleet.cli import main

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-sessions", "0"], "--max-sessions, --max-session-seconds and --cpu-threads"),
        (
            ["--token-file", "/nonexistent/voicefleet-pool-token"],
            "cannot read --token-file: [Errno 2] No such file or directory",
        ),
    ],
)
def test_bad_input_exits_2_and_says_what_to_change(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runtime", "serve", "--backend", "tiny", *args]) == 2
    assert says in capsys.readouterr().err
