"""Stage 10: the face app (edit eyes / mouth / pose, select final faces, label images)."""
