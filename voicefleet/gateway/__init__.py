"""The session gateway, imported as ``voicefleet.gateway``: a CPU-only process in front of a
pool's runtime pods that admits each conversation to a pod with a free slot, queues callers
while the whole pool is full, and relays every message both ways. It never imports torch,
numpy or kopf (``.importlinter``)."""
