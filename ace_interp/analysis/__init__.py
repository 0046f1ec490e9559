"""Analyses built on attribution and editing: query→value pathways (`pathways`), vocabulary projection
(`vocab`), the figure pipeline (`figures`), and how far an edit reaches into multi-hop questions (`edit_reach`)."""
