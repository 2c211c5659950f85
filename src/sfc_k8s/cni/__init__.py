"""The ``sfc-cni`` plugin: data-plane veths for NF pods, as Multus delegates them."""
