"""The harness the tests, the demo (``e2e/demo.py``) and the benchmarks (``bench/``) share,
in the package as ``kopf.testing`` is: real processes (the operator, the runtime, a stand-in
runtime that keeps the contract), hostile callers, cluster readers and the one poller.

Never imported by the operator or the runtime (an import contract says so). It needs the
``operator`` extra (a Kubernetes client) and, for the runtime's callers, the ``runtime`` one.
"""
