"""Types shared by the operator and the runtime: the VoiceAgentPool API, its CRD renderer,
and the operator <-> runtime contract. Plain pydantic; no framework imports."""
