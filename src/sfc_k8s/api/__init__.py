"""The sfc-k8s API: ServiceFunctionChain/CrossConnection models and the pure decisions on them.

Nothing here does I/O or imports another part of sfc-k8s, so every decision can be unit-tested
and shared by the CNI plugin, the controller and the node agent.
"""
