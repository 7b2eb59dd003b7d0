"""The voicefleet runtime, imported as ``voicefleet.runtime``: the model server of the GPU
pods. It never imports the operator or kopf."""
