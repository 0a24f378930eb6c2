"""Below every part: errors, paths, the private APIs of other libraries (compat), how commands end (guard), shared statistics."""
