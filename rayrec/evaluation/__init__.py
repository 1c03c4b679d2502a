"""`rayrec eval`: replaying real interactions in time order against rayrec and baseline policies."""
