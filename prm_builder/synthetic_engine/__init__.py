"""The synthetic config's engine: GSM8K solutions read as dataflow, statements rendered, arithmetic and the corruptions that make wrong steps."""
