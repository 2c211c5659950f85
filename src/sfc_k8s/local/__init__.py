"""The local cluster: a Kubernetes-compatible API server and a node runtime, for dev and CI."""
