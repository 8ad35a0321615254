"""What training and evaluation both read: rows (data.py, row_checks.py), their tokens with a StepFormat (tokenization.py) and models (loading.py)."""
