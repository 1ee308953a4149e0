"""results/ from runs/: tables, seaborn plots, statistics over seeds and the write-ups' claims."""
