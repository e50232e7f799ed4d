"""CLI sub-apps, one per area; the only modules that wire the packages together."""
