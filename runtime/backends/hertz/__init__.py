"""Hertz-dev (Standard Intelligence): codec, backbone and resynthesizer with per-slot state."""
