"""Development and build tooling, never deployed: the local stack (server, stand-ins), the
tools that build and generate (layer packaging, OpenAPI, schema snapshot, throwaway
databases) and the benchmarks."""
