"""LineageService (its RPCs arrive with the lineage issue) and its graph stores."""
