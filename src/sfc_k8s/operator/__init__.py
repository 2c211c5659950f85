"""The Kopf controller (ServiceFunctionChain -> CrossConnections) and node agent."""
