"""voicefleet: run fleets of full-duplex speech-to-speech voice agents on Kubernetes.

The distribution has one import name, ``voicefleet``. Its parts:

- ``voicefleet.api``: the VoiceAgentPool types and the operator <-> runtime contract,
  shared by both sides (pydantic only).
- ``voicefleet.catalog``: GPU, model and price tables as data files.
- ``voicefleet.operator``: the kopf operator and the pure capacity planner (the
  ``operator/`` folder; never imported as top-level ``operator``, which is the stdlib's).
- ``voicefleet.runtime``: the batched model server for the GPU pods (the ``runtime/`` folder).
- ``voicefleet.cli``: the ``voicefleet`` command.
"""

__version__ = "0.1.0"
