"""The chaos run of issue 9: the chart installed as shipped (two replicas, leader election),
one 400-session spot-first pool served by stand-in runtimes, and in turn:

1. one node NotReady for 5 s (a blip: shorter than the operator's NotReady grace);
2. every node NotReady for 60 s (a control-plane or network fault, not reclaims);
3. a 30 s API server outage (kube-apiserver SIGSTOPped), then a change to the pool;
4. 10 SIGKILLs of the leader at random moments while the pool scales 400 <-> 40;
5. a mass spot interruption (more spot nodes than there is spot capacity left) ...
6. ... and its recovery (every signal cleared);
7. 50 small pools created at once, then deleted at once.

Measured from outside only: watches of the pool pods and pools (``e2e/observe.py``), the
leader election Lease, and the records of the stand-in runtimes (``e2e/standins.py``), which
answer the operator's status polls and drain calls on each pod's IP. Per scenario: the most
pods that were not draining against the plan (a duplicate shows here), the least serving
capacity against the target, drain calls acknowledged by the runtimes against drain marks
made, pods left unschedulable once the nodes were back, and for the 50 pools the slowest
deletion. The operator replicas run as host processes with the chart's arguments and are
restarted as a kubelet restarts containers (``e2e/supervise.py``).

The parts: ``settings`` (what a run does, to which pools), ``view`` (the pool as the watches
show it), ``changes`` (what the run does to the cluster, and puts back), ``context`` (what
the scenarios share, and a scenario's window made a row), the scenarios (``faults``,
``spot``, ``burst``), ``run`` (the run in order), ``report`` (its table). No pytest here:
``e2e/test_chaos.py`` asserts on :class:`e2e.chaos.report.Result`, and ``python -m
e2e.chaos`` prints the same table on a sandbox of its own.
"""
