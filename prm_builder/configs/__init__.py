"""The five configs: one module each, ending with `SPEC = ConfigSpec(...)` (contract.py). No config imports another."""
