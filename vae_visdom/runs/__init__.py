"""A run on disk: the files an observer writes, the lock, resume, and reading runs back (`vae-visdom runs`)."""
