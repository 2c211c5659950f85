"""The eBPF cross-connection data plane: program, maps, loader and link/endpoint manager."""
