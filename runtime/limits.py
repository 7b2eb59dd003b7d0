"""Every bound and timeout of the runtime, in one place, each with the reason for its value.

The first group are the defaults of command-line flags (an operator may have reasons to move
them); the rest are fixed, because they follow from the protocol, the frame clock or the
Kubernetes contract rather than from a deployment.
"""

from __future__ import annotations

# --- defaults of flags -------------------------------------------------------------------
# --idle-seconds: a session that sends no audio for this long is closed. Moshi's clients and
# telephony stream continuously (silence included) from the first second, so this is long
# for a real caller and short next to the session cap a silent squatter would otherwise hold.
IDLE_SECONDS = 15.0
# --header-timeout-seconds: a connection must finish its request line and headers within
# this (slowloris). Real callers send theirs in one packet; nginx's default is 60 s, which
# is built for slow links, not for a pod with a handful of slots behind a load balancer.
HEADER_TIMEOUT_SECONDS = 10.0
# --max-client-lag-seconds: a caller whose reading falls this far behind the audio it is sent
# is dropped (reason too_slow). Past it the conversation is lost anyway (Moshi answers to
# what it heard seconds ago), and its socket buffers would keep growing stale audio.
MAX_CLIENT_LAG_SECONDS = 3.0
# --input-burst-seconds: how much audio a caller may send ahead of real time, the same 2 s
# as the engine's input queue: enough to catch up after a network stall, no more.
INPUT_BURST_SECONDS = 2.0

# --- admission -----------------------------------------------------------------------------
# New sessions a second the pod admits after a burst of max(SESSION_START_BURST,
# --max-sessions). A pod taking over a drained pod's callers gets them all at once (the
# burst); sessions last minutes, so a steady 20 a second is far above any real arrival rate,
# while a storm of connects (or of upgrades reset half-way) costs ~2 ms of server CPU each
# and is kept to a few percent of a core. The rest are refused before the upgrade (503,
# Retry-After, reason busy).
SESSION_STARTS_PER_SECOND = 20.0
SESSION_START_BURST = 10

# --- supervision ---------------------------------------------------------------------------
# How often the supervisor looks at every part and every session: small next to each bound
# it enforces (the tightest is the 2 s close), and 5 passes a second cost nothing.
SUPERVISE_INTERVAL_SECONDS = 0.2
# A codec request normally returns in a few milliseconds (a tick's batch for 80 sessions in
# ~25 ms); a worker that has not answered in 2 s is wedged, and every Opus caller on it is
# hearing silence meanwhile: it is killed and replaced.
CODEC_REPLY_TIMEOUT_SECONDS = 2.0
# A fresh worker imports numpy and sphn; on a busy 2-core node that took up to 5 s.
CODEC_START_TIMEOUT_SECONDS = 30.0
# More restarts than this within the window is a crash loop (a bad library, a node out of
# memory): /healthz fails so the kubelet replaces the whole pod instead.
CODEC_RESTART_LIMIT = 5
CODEC_RESTART_WINDOW_SECONDS = 300.0
# A step takes 5-50 ms; the idle clock wakes every 0.5 s. Ten seconds without a heartbeat is a
# wedged GPU or a deadlock, not load. The engine cannot be restarted in place (its CUDA state
# is suspect), so the process fails /healthz, tells its callers, and exits.
ENGINE_STALL_SECONDS = 10.0

# --- moving conversations ----------------------------------------------------------------
# An imported conversation's LM history is replayed between frames, in chunks of this many
# steps: one chunk is one forward of one slot over that many positions. On a GPU a chunk
# costs at least one read of the LM's weights (Moshi 7B: ~13 GB, ~4 ms on an H100, est.)
# up to ~180 positions, so small chunks waste the read; on the tiny CPU model 64 steps take
# ~5 ms (bench/results/move_state_tiny_cpu.json: 0.08 ms a step at 32, 0.04 at 128).
IMPORT_CHUNK_STEPS = 64
# Share of a frame the replay may use after each step (at least one chunk per frame, so it
# always progresses): 20 ms of Moshi's 80 ms, beside a batched step of 20-50 ms at full
# load, keeps every other conversation's frame on time.
IMPORT_SHARE_OF_FRAME = 0.25
# A chunk's expected cost is the longest recent one, decaying by this factor per chunk:
# one slow chunk makes the next few wait for a frame with more room, not all of them.
CHUNK_COST_DECAY = 0.9
# The largest state an import accepts: full-size Moshi's is ~16 MiB (Mimi's two transformer
# caches; the token history is 25 KiB a minute), so four times that is no legitimate state.
MAX_STATE_BYTES = 64 * 2**20
# Sending that body: 16 MiB crosses a pod network in well under a second.
STATE_BODY_TIMEOUT_SECONDS = 10.0
# A whole 240 s conversation (3000 steps) replays in about a second at a frame's share per
# tick, on an H100 (est.) as on the tiny CPU model; 60 s covers a machine many times slower.
IMPORT_TIMEOUT_SECONDS = 60.0
# An imported conversation whose caller has not attached within this is let go: the gateway
# attaches right after the import answers; a slot held longer is a pod's capacity lost.
IMPORT_ATTACH_SECONDS = 30.0

# --- the transport -------------------------------------------------------------------------
# How long a server-side close (error, cap, drain, too slow) may take before the connection
# is aborted: a caller that does not read must not hold its slot past a deadline.
CLOSE_TIMEOUT_SECONDS = 2.0
# How often a session's read lag is probed with a WebSocket ping. The pong comes back only
# once the caller has read everything sent before the ping, so its delay is how stale the
# audio the caller hears is.
LAG_PROBE_INTERVAL_SECONDS = 1.0
# The kernel's send buffer per WebSocket (Linux doubles it) and the event loop's own buffer
# in front of it. Left alone, loopback autotuning gave 2-4 MB: tens of seconds of Opus
# queued for a caller that stopped reading. 64 KiB still fills a 200 ms round trip at
# 24 kHz PCM (48 KB/s) twice over; the lag probe bounds the time, these bound the memory.
SEND_BUFFER_BYTES = 32 * 1024
WRITE_BUFFER_BYTES = 16 * 1024
# How long a kept-alive HTTP connection may sit between requests (or spend on the next
# request's headers). Longer than aiohttp's client pool keeps one (15 s: the operator's
# runtime client), so the client always closes an idle connection first and never sends a
# drain into a socket the server just closed; short enough that trickling a second request
# holds a connection no longer than this.
KEEPALIVE_SECONDS = 20.0
# Reading the body of POST /v1/drain (a few dozen bytes) may take this long.
BODY_TIMEOUT_SECONDS = 5.0

# --- what a caller may send --------------------------------------------------------------
# Every client message costs at least this much of the input budget (at most 200 messages a
# second): a web client sends 20 ms Opus pages (50 a second), telephony 10-20 ms frames.
MESSAGE_COST_SECONDS = 0.005
# Opus never exceeds 510 kbit/s, so an Ogg/Opus message of n bytes holds at least
# n / 63750 s of audio: charged before decoding, so bytes cannot buy free codec time.
OPUS_MAX_BYTES_PER_SECOND = 510_000 / 8
# The budget refills 5% faster than real time: a caller's sound card clock may run fast.
INPUT_RATE_SLACK = 1.05
# A session that had this much audio (or message cost) dropped for exceeding its budget is
# closed (reason input_rate): a network stall's catch-up burst loses far less, a flood
# reaches it within milliseconds.
INPUT_FLOOD_SECONDS = 10.0
# Opus messages of one session waiting for a codec worker: decoding is batched every 20 ms,
# so a real caller has one or two in flight; more means a burst the budget let through.
MAX_DECODE_BACKLOG_MESSAGES = 32
MAX_DECODE_BACKLOG_BYTES = 64 * 1024
# Client messages one session handles before other tasks get a turn (about 1 ms of work):
# a burst of thousands queued in aiohttp would otherwise hold the event loop, and with it
# every other caller's audio, until it was all read.
MESSAGES_PER_TURN = 32

# --- stopping ----------------------------------------------------------------------------
# After the sessions are gone, how long aiohttp may take to close what is left (its own
# default, 60 s, alone would outlast terminationGracePeriodSeconds' margin of 30 s).
SHUTDOWN_TIMEOUT_SECONDS = 3.0
# Once stopping has begun, the process exits within this no matter what hangs (a wedged
# engine thread, a codec worker that ignores its pipe): well inside the 30 s that
# terminationGracePeriodSeconds leaves after the drain.
EXIT_BACKSTOP_SECONDS = 15.0

# A caller's input that arrived in a burst (a move's held audio, network jitter) would stay
# queued for good: the clock takes one frame a tick. While more than one frame waits, frames
# this quiet at the head of the queue are skipped, so the lag melts away in the caller's
# pauses and no speech is lost (WebRTC's NetEQ "accelerates" in silence likewise). -50 dBFS:
# below speech, above the dither and room noise of a quiet line.
CATCH_UP_SILENCE_RMS = 10 ** (-50 / 20)
