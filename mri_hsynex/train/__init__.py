"""Training of the cascade and the localiser on synthetic images made from label maps."""
