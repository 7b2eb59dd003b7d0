"""Every bound and timeout of the gateway, each with the reason for its value. The first
group are the defaults of flags; the rest follow from the runtime's contract."""

from __future__ import annotations

# --- defaults of flags -------------------------------------------------------------------
# --poll-seconds: how often each backend's GET /v1/status is read. Admission does not wait
# for it (a refusal is retried elsewhere at once, a conversation that ends frees its slot in
# the gateway's books at once); it bounds how stale the view of slots freed by callers
# connected directly to a pod, or of a pod that died, can be.
POLL_SECONDS = 1.0
# --queue-max: callers held while the whole pool is full. Each holds an open socket and
# nothing else; beyond this the pool is so far short that waiting would not help.
QUEUE_MAX = 100
# --queue-wait-seconds: how long a held caller waits for a slot. Kyutai's web client shows
# "waiting" meanwhile; much longer and the caller has given up anyway.
QUEUE_WAIT_SECONDS = 30.0
# --drain-seconds: after SIGTERM, live conversations are relayed until they end or this
# passes. The runtime's longest cap is 240 s (maxSessionSeconds); the pod's grace period
# must exceed it for the promise to hold.
DRAIN_SECONDS = 300.0

# --- polling -------------------------------------------------------------------------------
# A pod on loopback or the pod network answers /v1/status in a millisecond; one that takes
# half a second is too busy or gone, and out of rotation is the right place for it.
POLL_TIMEOUT_SECONDS = 0.5
# A pod that answered 503 although the gateway's books gave it a free slot (a slot freed a
# moment later than the relay saw the end, taken by a direct caller, or the runtime's "busy"
# start limit, whose bucket refills one start per 50 ms) is offered nobody until its status
# is read again, this soon instead of at the next period.
REPOLL_SECONDS = 0.05

# --- relaying ------------------------------------------------------------------------------
# The upstream upgrade: a connect and one request to a pod; longer means the pod is not
# serving, and the caller is better off on another.
CONNECT_TIMEOUT_SECONDS = 2.0
# The largest message relayed, as the runtime's own aiohttp bound (4 x its 64 KiB protocol
# bound, runtime/routes.py WS_MAX_MSG_SIZE): a larger one is refused here with 1009, as the
# runtime would, before it is read whole or costs the pod anything.
MAX_MESSAGE_BYTES = 4 * 64 * 1024
# A write to one side that has not completed in this long means that side stopped reading
# (the runtime drops a caller 3 s behind and aborts a close after 2 s more): both sockets are
# aborted, so a stuck caller never holds a pod's slot or the gateway's memory.
RELAY_STALL_SECONDS = 6.0
# How often live relays are checked for a stalled write.
SWEEP_SECONDS = 0.5

# --- moving conversations --------------------------------------------------------------------
# One call of a move (an export, or an import, which answers once the new slot has replayed
# the conversation: about a second for 240 s of Moshi on a GPU). The runtime gives up on an
# import after 60 s itself (runtime/limits.py IMPORT_TIMEOUT_SECONDS).
MOVE_CALL_SECONDS = 65.0
# Caller messages held while a move switches pods: the switch takes a fraction of a second
# (12.5 messages a second); a caller sending far more is not sending audio.
MAX_HELD_MESSAGES = 250

# --- stopping ------------------------------------------------------------------------------
# After the conversations are gone, how long aiohttp may take to close what is left.
SHUTDOWN_TIMEOUT_SECONDS = 3.0

# After a move's switch the caller still hears the old pod until the new one first speaks
# (one frame, normally well under a second); past this, the old one is let go regardless.
CUT_OVER_SECONDS = 2.0
