"""Data pipelines: the MSD tagging split layout and the embedded synthetic corpus."""
