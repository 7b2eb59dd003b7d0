"""The sandbox: a real Kubernetes control plane on loopback with fake GPU nodes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok are built from Go
modules (``build``), found (``binaries``), given certificates (``pki``), started and
stopped as plain processes (``processes``) and tied together by ``manager``. ``nodes``
describes the fake GPU nodes that kwok keeps alive.
"""
