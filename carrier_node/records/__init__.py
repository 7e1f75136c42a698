"""What the node keeps: :mod:`~carrier_node.records.state` (the outbox of answers not yet
acknowledged, the nonces of requests seen, results held for the reviewer),
:mod:`~carrier_node.records.audit` (the hash-chained audit log the carrier verifies with one
command) and :mod:`~carrier_node.records.review` (what a reviewer sees of a held result)."""
