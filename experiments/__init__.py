"""Research runs whose outputs are committed under results/ (each writes run.json)."""
