"""Statistical disclosure control at the node: suppression patterns, their audit, the release
ledger, dominance and differential privacy. Everything here runs before anything is signed."""
