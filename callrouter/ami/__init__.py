"""AMI edge: frames in, typed events out (events), from a live PBX (client) or a capture (capture)."""
