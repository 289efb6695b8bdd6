"""The ``fusebox`` command and the orchestration around the parts: the all-in-one
demo, the benchmarks and the embedded servers they use. Imports edge, cloud and
simulators; none of them imports this."""
