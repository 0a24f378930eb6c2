"""One run: plan -> data -> batches -> model -> fit in the tracked run -> best weights -> record."""
