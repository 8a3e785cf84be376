"""The benchmark harness: HDR recording, transport drivers (NanoMQ and its peers), load generators.

`nanomq.bench.ring` is `nanomq bench ring`; `hdr`, `drivers` and `loadgen` are the parts the
workflow reuses. Only the CLI imports this package.
"""
