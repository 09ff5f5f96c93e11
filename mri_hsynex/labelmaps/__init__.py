"""Training label maps: real subjects' aseg + teacher subunits, and SynthSeg's whole-brain maps."""
