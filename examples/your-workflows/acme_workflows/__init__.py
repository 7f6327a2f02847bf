"""Acme's workflows for syncd: an example of a team's package (see ``workflows``)."""
