"""What is done with built rows: push and export (hub.py), the dataset card, statistics and the HTML report."""
