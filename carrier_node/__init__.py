"""The carrier node: computes the agency's metrics where the carrier's data lives and returns
only aggregates that passed the carrier's disclosure rules."""
