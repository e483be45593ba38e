"""Running a trained network over images: the one inference loop, codes files from runs, image queries."""
