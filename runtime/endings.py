"""How sessions end and why input is dropped: the labels of the runtime's metrics and the
WebSocket close codes (RFC 6455) the server uses."""

from __future__ import annotations

# Ended-by reasons (the label of voicefleet_runtime_sessions_ended_total).
END_CLIENT = "client_closed"
END_LIMIT = "session_limit"
END_DRAIN = "drain_deadline"
END_ERROR = "bad_input"
END_SHUTDOWN = "shutdown"
END_IDLE = "idle"
END_TOO_SLOW = "too_slow"
END_INPUT_RATE = "input_rate"
END_CODEC = "codec_failure"
END_ENGINE = "engine_failure"

# Why input was dropped (the label of voicefleet_runtime_input_dropped_total).
DROP_RATE = "rate"
DROP_BACKLOG = "backlog"
DROP_CATCH_UP = "catch_up"  # a quiet frame skipped to take a backlog down

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_INTERNAL_ERROR = 1011
